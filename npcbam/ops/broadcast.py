r"""Adding and multiplying two maps that *both* broadcast: BAM's (N, C, 1, 1) channel map and
(N, 1, H, W) spatial map meet in an (N, C, H, W) sum (the paper) or product (the official code).

Broadcasting copies a value along an axis of size 1; in the backward every copy sends its
gradient back to the one value, so the gradient is *summed* over the broadcast axes
(:func:`sum_to_shape`): over H×W for the channel map, over C for the spatial map.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import quiet_floats, require_finite_result, require_op_array, require_shape


class BroadcastCache(NamedTuple):
    a: np.ndarray  # e.g. (N, C, 1, 1)
    b: np.ndarray  # e.g. (N, 1, H, W)
    out_shape: tuple[int, ...]  # their broadcast shape, e.g. (N, C, H, W)


def sum_to_shape(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    r"""Sum ``grad`` over the axes along which an operand of ``shape`` was broadcast.

    .. math:: \bar a_{n c 1 1} = \sum_{i, j} \bar t_{n c i j}
              \quad\text{for } a \text{ of shape } (N, C, 1, 1)

    Parameters
    ----------
    grad : ndarray, the broadcast shape, e.g. (N, C, H, W)
    shape : tuple of int, the operand's shape, same length, each axis 1 or ``grad``'s

    Returns
    -------
    ndarray, shape ``shape``
    """
    axes = tuple(axis for axis, size in enumerate(shape) if size == 1 and grad.shape[axis] != 1)
    return grad.sum(axis=axes, keepdims=True)


def _check_operands(a, b, op: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """``a`` and ``b`` as arrays of one dtype and ndim whose axes each agree or are 1."""
    a, b = require_op_array(a, "a"), require_op_array(b, "b")
    if a.ndim != b.ndim or any(p != q and 1 not in (p, q) for p, q in zip(a.shape, b.shape)):
        raise ValueError(
            f"{op}: a of shape {a.shape} and b of shape {b.shape} do not broadcast axis by axis "
            "(same number of axes, each of equal size or 1 in one of them)"
        )
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: a is {a.dtype} and b is {b.dtype}; expected one dtype")
    return a, b, tuple(max(p, q) for p, q in zip(a.shape, b.shape))


@quiet_floats
def broadcast_add_forward(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, BroadcastCache]:
    r"""Sum of two broadcast maps: :math:`t = a + b`, e.g. :math:`t_{ncij} = a_{nc} + b_{nij}`.

    Parameters
    ----------
    a, b : ndarray, same ndim, each axis of equal size or 1 in one of them

    Returns
    -------
    out : ndarray, the broadcast shape
    cache : BroadcastCache

    Checks: float32 or float64, one dtype, broadcasting axis by axis (else ``TypeError`` /
    ``ValueError``); a NaN or inf reaching the output, or an overflow, raises ``ValueError``.
    """
    a, b, shape = _check_operands(a, b, "broadcast_add_forward")
    out = a + b
    require_finite_result("broadcast_add_forward", out, {"a": a, "b": b})
    return out, BroadcastCache(a, b, shape)


@quiet_floats
def broadcast_add_backward(
    dout: np.ndarray, cache: BroadcastCache
) -> tuple[np.ndarray, np.ndarray]:
    r"""Gradients of :func:`broadcast_add_forward`: each operand gets :math:`\bar t` summed
    over its broadcast axes, :math:`\bar a = \sum_{i,j} \bar t`, :math:`\bar b = \sum_c \bar t`.

    Parameters
    ----------
    dout : ndarray, the output's shape, :math:`\bar t`
    cache : BroadcastCache

    Returns
    -------
    da : ndarray, shape of ``a``
    db : ndarray, shape of ``b``
    """
    require_shape(dout, cache.out_shape, "dout", "the output's shape")
    da = sum_to_shape(dout, cache.a.shape)
    db = sum_to_shape(dout, cache.b.shape)
    require_finite_result("broadcast_add_backward", da, {"dout": dout})  # dout's NaN show here
    return da, db


@quiet_floats
def broadcast_multiply_forward(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, BroadcastCache]:
    r"""Product of two broadcast maps: :math:`t = a \odot b`, e.g.
    :math:`t_{ncij} = a_{nc}\, b_{nij}`.

    Parameters, returns and checks as :func:`broadcast_add_forward`.
    """
    a, b, shape = _check_operands(a, b, "broadcast_multiply_forward")
    out = a * b
    require_finite_result("broadcast_multiply_forward", out, {"a": a, "b": b})
    return out, BroadcastCache(a, b, shape)


@quiet_floats
def broadcast_multiply_backward(
    dout: np.ndarray, cache: BroadcastCache
) -> tuple[np.ndarray, np.ndarray]:
    r"""Gradients of :func:`broadcast_multiply_forward`: the product rule, then each sum
    over the operand's broadcast axes,

    .. math:: \bar a_{nc} = \sum_{i,j} \bar t_{ncij}\, b_{nij}, \qquad
              \bar b_{nij} = \sum_c \bar t_{ncij}\, a_{nc}

    Parameters
    ----------
    dout : ndarray, the output's shape, :math:`\bar t`
    cache : BroadcastCache

    Returns
    -------
    da : ndarray, shape of ``a``
    db : ndarray, shape of ``b``
    """
    require_shape(dout, cache.out_shape, "dout", "the output's shape")
    da = sum_to_shape(dout * cache.b, cache.a.shape)
    db = sum_to_shape(dout * cache.a, cache.b.shape)
    inputs = {"dout": dout, "a": cache.a, "b": cache.b}
    require_finite_result("broadcast_multiply_backward", da, inputs)
    require_finite_result("broadcast_multiply_backward", db, inputs)
    return da, db
