"""Inputs for exercise cases: distinct values, margins away from kinks, labels.

Every case is float64 and drawn from a seeded generator, so a report can be reproduced. Values
are shuffled evenly spaced grids (no two equal, see :func:`npcbam.gradcheck.distinct_values`),
and where a maximum or a ReLU is involved the draw is repeated until the relevant gap is wide:
a correct implementation that rounds differently can then never pick another winner.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from npcbam.gradcheck import distinct_values
from npcbam.testing import top2_gap  # noqa: F401  (the cases' margin, re-exported)

MARGIN = 1e-3  # smallest accepted top-2 gap of a maximum, and |pre-activation| of a ReLU


def shape_label(**sizes) -> str:
    """ "N=2, C=8, H=5, W=4"-style label of a case."""
    return ", ".join(f"{name}={value}" for name, value in sizes.items())


def values(rng: np.random.Generator, shape, scale: float = 2.0) -> np.ndarray:
    """Distinct float64 values in [-scale, scale], shuffled."""
    return distinct_values(rng, tuple(shape), scale)


def weights(rng: np.random.Generator, shape) -> np.ndarray:
    """A weight tensor: distinct values of about the size of PyTorch's initialisation."""
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
    return values(rng, shape, scale=2.0 / np.sqrt(fan_in))


def upstream(rng: np.random.Generator, shape) -> np.ndarray:
    """An upstream gradient with distinct entries (never all ones: that hides bugs), off
    centre so that its sums over any axes are not zero."""
    return values(rng, shape, scale=1.5) + rng.uniform(0.2, 0.4)


def draw_until(rng: np.random.Generator, draw: Callable, acceptable: Callable, tries: int = 200):
    """``draw(rng)`` again until ``acceptable(result)``: inputs away from every kink."""
    for _ in range(tries):
        result = draw(rng)
        if acceptable(result):
            return result
    raise RuntimeError("no draw met the margins; widen the value range")  # a catalogue bug


def with_ties(rng: np.random.Generator, shape, axes: tuple[int, ...]) -> np.ndarray:
    """Distinct values, then in every pooled window the maximum copied to a second, later
    position: every window has a tie for its maximum (the first occurrence should win)."""
    x = values(rng, shape)
    keep = [i for i in range(x.ndim) if i not in axes]
    moved = np.ascontiguousarray(x.transpose(*keep, *axes))
    flat = moved.reshape(-1, int(np.prod([x.shape[i] for i in axes])))  # (windows, size)
    for row in flat:
        first = int(np.argmax(row))
        others = [i for i in range(row.size) if i != first]
        row[others[rng.integers(len(others))]] = row[first]  # a tie, before or after
    inverse = np.argsort([*keep, *axes])
    return flat.reshape(moved.shape).transpose(*inverse).copy()
