"""Shared test helpers: kink-free inputs and margins (how far an input is from a kink)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from npcbam.gradcheck import distinct_values

__all__ = [
    "EXACT",
    "MAX_REL_ERR",
    "SAFE_MARGIN",
    "assert_gradients_match",
    "distinct_values",
    "kink_margin",
    "relative_error",
    "relu_margin",
    "seeds",
    "top2_gap",
]

# A finite difference of order 4 evaluates f at t +- h and t +- 2h; a max or ReLU whose margin
# exceeds this is guaranteed not to switch (for entries of size <= 1) within the stencil.
SAFE_MARGIN = 1e-2


def top2_gap(x: np.ndarray, axis) -> float:
    """Smallest gap between the largest and second-largest entry along ``axis`` (inf if the
    axis has one element): the margin of a max-pooling from its kink."""
    moved = np.moveaxis(x, axis, -1) if isinstance(axis, int) else None
    if moved is None:  # several axes: flatten them to the end
        keep = [i for i in range(x.ndim) if i not in axis]
        moved = x.transpose(*keep, *axis).reshape(*[x.shape[i] for i in keep], -1)
    if moved.shape[-1] < 2:
        return float("inf")
    top = np.sort(moved, axis=-1)[..., -2:]
    return float((top[..., 1] - top[..., 0]).min())


MAX_REL_ERR = 1e-6  # the acceptance bound on analytic vs finite-difference gradients
EXACT = {"rtol": 1e-12, "atol": 1e-12}  # vectorized op vs its loop oracle, both float64

seeds = st.integers(0, 2**32 - 1)


def assert_gradients_match(report) -> None:
    """A clean gradient check: every entry compared (no kink), all passed, and the worst
    relative error within the acceptance bound."""
    assert report.kinks == 0, str(report)
    assert report.passed, str(report)
    assert report.max_rel_err <= MAX_REL_ERR, str(report)


def relu_margin(x: np.ndarray, w_hidden: np.ndarray) -> float:
    """Smallest |pre-activation| of CBAM's shared-MLP ReLU, over the average- and the
    max-pooled branch: the margin of the ReLU from its kink.

    ``x`` is (N, C, H, W), ``w_hidden`` the ``mlp.0.weight`` (C/r, C, 1, 1).
    """
    n, c = x.shape[:2]
    pooled = np.concatenate([x.mean(axis=(2, 3)), x.reshape(n, c, -1).max(axis=2)])  # (2N, C)
    return float(np.abs(pooled @ w_hidden.reshape(-1, c).T).min())  # (2N, C/r)


def kink_margin(x: np.ndarray, refined: np.ndarray, w_hidden: np.ndarray) -> float:
    """How far CBAM's input is from every kink it meets: the smallest of the global spatial
    max's top-2 gap on ``x``, the channel max's top-2 gap on ``refined`` (the channel-gated
    map, which is what spatial attention maxes), and :func:`relu_margin`."""
    return min(top2_gap(x, axis=(2, 3)), top2_gap(refined, axis=1), relu_margin(x, w_hidden))


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Normwise relative error ``max|actual - expected| / max|expected|`` (0 if both are all
    zero, inf if only ``expected`` is): the parity measure against PyTorch."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {actual.shape} and {expected.shape}")
    diff, scale = np.abs(actual - expected).max(), np.abs(expected).max()
    if scale == 0:
        return 0.0 if diff == 0 else float("inf")
    return float(diff / scale)
