r"""Dense (fully connected) layer.

The seed's shared MLP is written with 1×1 convolutions on pooled (N, C, 1, 1) tensors; on a
1×1 map a 1×1 convolution *is* a dense layer, so npcbam computes it as one on (N, C) vectors.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import quiet_floats, require_finite_result, require_op_array, require_shape


class LinearCache(NamedTuple):
    x: np.ndarray  # (N, D_in)
    weight: np.ndarray  # (D_out, D_in)
    has_bias: bool


@quiet_floats
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

    Checks: ``x``, ``weight`` (and ``bias``) float32 or float64 with the shapes above (no empty
    axis, D_in and D_out agreeing), else ``TypeError`` / ``ValueError`` naming the argument; a
    NaN or inf in any of them, or an output that overflows, raises ``ValueError``, found in the
    (N, D_out) output.
    """
    x = require_op_array(x, "x", 2, "(N, D_in)")
    weight = require_op_array(weight, "weight", 2, "(D_out, D_in)")
    require_shape(weight, (weight.shape[0], x.shape[1]), "weight", "(D_out, D_in) with x's D_in:")
    if bias is not None:
        bias = require_op_array(bias, "bias", 1, "(D_out,)")
        require_shape(bias, weight.shape[:1], "bias", "(D_out,) =")
    out = x @ weight.T  # (N, D_in) @ (D_in, D_out) -> (N, D_out)
    if bias is not None:
        out = out + bias
    require_finite_result("linear_forward", out, {"x": x, "weight": weight, "bias": bias})
    return out, LinearCache(x, weight, bias is not None)


@quiet_floats
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

    Checks: ``dout`` has the output's shape; ``dx`` and ``dweight`` are checked finite (a NaN or
    inf in ``dout``, or an overflow, raises ``ValueError``).
    """
    require_shape(dout, (cache.x.shape[0], cache.weight.shape[0]), "dout", "the output's shape")
    dx = dout @ cache.weight  # (N, D_out) @ (D_out, D_in) -> (N, D_in)
    dweight = dout.T @ cache.x  # (D_out, N) @ (N, D_in) -> (D_out, D_in)
    dbias = dout.sum(axis=0) if cache.has_bias else None
    inputs = {"dout": dout, "x": cache.x, "weight": cache.weight}
    require_finite_result("linear_backward", dweight, inputs)  # dout's NaN or inf show here
    require_finite_result("linear_backward", dx, inputs)
    if dbias is not None:
        require_finite_result("linear_backward", dbias, inputs)
    return dx, dweight, dbias
