"""Shared test helpers: kink-free inputs and margins (how far an input is from a kink)."""

from __future__ import annotations

import numpy as np

from npcbam.gradcheck import distinct_values

__all__ = ["SAFE_MARGIN", "distinct_values", "top2_gap"]

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
