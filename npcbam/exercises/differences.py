r"""Finite differences of a student's own function, called through a runner.

The forward is called on perturbed copies of its input (a whole batch of calls in one
``runner.run``); the central difference of order 4,

.. math:: \bar{x}_i \approx \frac{-L(x + 2h e_i) + 8L(x + h e_i) - 8L(x - h e_i) + L(x - 2h e_i)}
          {12 h}, \qquad L(x) = \langle \bar{y}, f(x) \rangle,

is then compared with the student's backward. A coordinate where two step sizes disagree (a
max or ReLU switching inside the stencil: a kink) is counted and not compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npcbam.exercises.runner import Runner
from npcbam.gradcheck import STENCILS

STEPS = (1e-4, 1e-5)  # two step sizes: agreement between them tells a kink from a slope
RTOL = 1e-6
ATOL = 1e-9


@dataclass(frozen=True)
class Differences:
    """Central differences of ``<dout, f>`` along every coordinate of one argument, or why not."""

    numeric: np.ndarray | None  # shape of the argument; NaN where a kink was found
    kinks: int
    failure: str  # "" when computed


def central_differences(
    runner: Runner, function: str, args: tuple, position: int, dout, key: str | None = None
) -> Differences:
    """Differences of ``<dout, function(*args)>`` w.r.t. ``args[position]`` (or, when
    ``key`` is given, w.r.t. the array ``args[position][key]`` of a dict argument)."""
    base = args[position] if key is None else args[position][key]
    offsets = STENCILS[4]
    calls_args = []
    for step in STEPS:
        for flat in range(base.size):
            for offset, _ in offsets:
                moved = base.copy()
                moved.flat[flat] += offset * step
                new_args = list(args)
                if key is None:
                    new_args[position] = moved
                else:
                    new_args[position] = {**args[position], key: moved}
                calls_args.append(tuple(new_args))
    calls = runner.run(function, calls_args)
    failed = next((c for c in calls if c.failure or not isinstance(c.returned, np.ndarray)), None)
    if failed is not None:
        why = failed.message or failed.failure or "it did not return one array"
        return Differences(None, 0, f"{function} could not be evaluated at x ± h: {why}")
    estimates = np.zeros((len(STEPS), base.size))
    k = 0
    for s, step in enumerate(STEPS):
        for flat in range(base.size):
            total = 0.0
            for _, weight in offsets:
                total = total + weight * calls[k].returned
                k += 1
            if np.shape(total) != np.shape(dout):
                return Differences(None, 0, f"{function} returned a different shape at x ± h")
            estimates[s, flat] = np.vdot(dout, total) / step
    coarse, fine = estimates
    kinked = np.abs(coarse - fine) > 1e-3 * np.maximum(1.0, np.abs(coarse))
    numeric = np.where(kinked, np.nan, coarse).reshape(base.shape)
    return Differences(numeric, int(kinked.sum()), "")


def compare_with_differences(analytic, numeric: np.ndarray) -> tuple[bool, float, int]:
    """(passed, worst relative error, coordinates compared) of an analytic gradient against
    differences (NaN entries are kinks, skipped)."""
    if not isinstance(analytic, np.ndarray) or analytic.shape != numeric.shape:
        return False, float("inf"), 0
    keep = ~np.isnan(numeric)
    a, n = analytic[keep].astype(np.float64), numeric[keep]
    if a.size == 0:
        return False, float("inf"), 0
    err = np.abs(a - n)
    rel = err / np.maximum(np.maximum(np.abs(a), np.abs(n)), ATOL / RTOL)
    return bool((err <= ATOL + RTOL * np.abs(n)).all()), float(rel.max()), int(a.size)
