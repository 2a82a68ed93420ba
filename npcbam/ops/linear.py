r"""Dense (fully connected) layer.

The seed's shared MLP is written with 1×1 convolutions on pooled (N, C, 1, 1) tensors; on a
1×1 map a 1×1 convolution *is* a dense layer, so npcbam computes it as one on (N, C) vectors.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LinearCache(NamedTuple):
    x: np.ndarray  # (N, D_in)
    weight: np.ndarray  # (D_out, D_in)
    has_bias: bool


def linear_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None
) -> tuple[np.ndarray, LinearCache]:
    r"""Affine map, PyTorch layout (weight rows are output units).

    .. math:: y = x W^\top + b, \qquad y_{no} = \sum_i x_{ni} W_{oi} + b_o

    Parameters
    ----------
    x : ndarray, shape (N, D_in)
    weight : ndarray, shape (D_out, D_in)
    bias : ndarray, shape (D_out,), optional

    Returns
    -------
    out : ndarray, shape (N, D_out)
    cache : LinearCache
    """
    out = x @ weight.T  # (N, D_in) @ (D_in, D_out) -> (N, D_out)
    if bias is not None:
        out = out + bias
    return out, LinearCache(x, weight, bias is not None)


def linear_backward(
    dout: np.ndarray, cache: LinearCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    r"""Gradients of the affine map.

    .. math::

        \frac{\partial L}{\partial x} = \frac{\partial L}{\partial y} W, \qquad
        \frac{\partial L}{\partial W} = \Big(\frac{\partial L}{\partial y}\Big)^{\!\top} x, \qquad
        \frac{\partial L}{\partial b} = \sum_n \frac{\partial L}{\partial y_{n\cdot}}

    Parameters
    ----------
    dout : ndarray, shape (N, D_out)
    cache : LinearCache

    Returns
    -------
    dx : ndarray, shape (N, D_in)
    dweight : ndarray, shape (D_out, D_in)
    dbias : ndarray, shape (D_out,), or None when the forward had no bias
    """
    dx = dout @ cache.weight  # (N, D_out) @ (D_out, D_in) -> (N, D_in)
    dweight = dout.T @ cache.x  # (D_out, N) @ (N, D_in) -> (D_out, D_in)
    dbias = dout.sum(axis=0) if cache.has_bias else None
    return dx, dweight, dbias
