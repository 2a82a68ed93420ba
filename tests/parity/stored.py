"""Reading stored parity fixtures and comparing a module's results with them (no torch).

A fixture holds ``x``, ``dy``, ``state/<key>`` (the initial state dict) and PyTorch's ``y``,
``dx``, ``grad/<param>`` and ``after/<buffer>`` (buffers after the forward).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
from helpers import relative_error


@cache
def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def load_fixture(path: Path) -> dict[str, np.ndarray]:
    """Every array of a fixture (fresh copies), loaded without pickle."""
    return {name: value.copy() for name, value in _load(path).items()}


def entries(fixture: dict, prefix: str) -> dict[str, np.ndarray]:
    """The fixture's arrays whose names start with ``prefix/``, keyed without it."""
    return {name[len(prefix) + 1 :]: v for name, v in fixture.items() if name.startswith(prefix)}


def run_module(module, fixture: dict) -> dict[str, np.ndarray]:
    """Forward ``x`` and backward ``dy`` through ``module`` (gradients zeroed first); the
    results keyed as the fixture's: ``y``, ``dx``, ``grad/<key>``, ``after/<key>``."""
    module.zero_grad()
    y = module.forward(fixture["x"])
    dx = module.backward(fixture["dy"])
    results = {"y": y, "dx": dx}
    results.update({f"grad/{key}": grad for key, grad in module.grads.items()})
    results.update({f"after/{key}": np.array(value) for key, value in module.buffers().items()})
    return results


def errors_against(
    fixture: dict,
    results: dict,
    scale_key: Callable[[str], str | tuple[str, ...] | None] = lambda key: None,
) -> dict[str, float]:
    """The error of each result against the fixture's: exact equality for integers (0 or
    inf), otherwise :func:`helpers.relative_error`; or, where ``scale_key(key)`` names another
    entry (or a tuple of entries), the largest difference divided by that entry's largest
    magnitude (the largest over the tuple) (for a tensor whose true value is zero, where a
    relative error means nothing)."""
    errors = {}
    for key, ours in results.items():
        theirs = fixture[key]
        scale = scale_key(key)
        if np.issubdtype(theirs.dtype, np.integer):
            errors[key] = 0.0 if np.array_equal(ours, theirs) else float("inf")
        elif scale is not None:
            diff = np.abs(np.asarray(ours, np.float64) - theirs.astype(np.float64)).max()
            scales = (scale,) if isinstance(scale, str) else scale  # one key or several
            size = max(np.abs(fixture[k].astype(np.float64)).max() for k in scales)
            errors[key] = float(diff / size)
        else:
            errors[key] = relative_error(ours, theirs)
    return errors
