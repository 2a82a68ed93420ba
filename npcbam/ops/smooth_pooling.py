r"""Two more global poolings over H×W for channel attention: L2 ("lp") and log-sum-exp ("lse").

The CBAM paper pools with average and max; the official code also offers the power-average
``lp_pool2d`` with p = 2 and a log-sum-exp pooling. Both are smooth where max is not: L2
pooling weighs each position by its own value, log-sum-exp by its softmax weight, a "soft"
maximum. Same conventions as :mod:`npcbam.ops.pooling` (``add_to`` in the backward, through
:func:`~npcbam.ops.pooling.add_broadcast`).

Both are computed so that a finite ``x`` gives a finite result whenever the exact result is
representable: log-sum-exp shifts by the maximum, L2 pooling divides by the largest magnitude
when the plain sum of squares overflows or underflows. Checks: ``x`` float32 or float64 of
shape (N, C, H, W) with no empty axis; a NaN or inf in ``x`` is found in the (N, C) output at no
extra pass (log-sum-exp ignores ``-inf``, whose weight is exactly 0). ``dout`` must have the
output's shape; it is not scanned, and neither backward can overflow (each multiplies ``dout``
by weights of magnitude at most 1).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import quiet_floats, require_finite_result, require_op_array, require_shape
from npcbam.ops.pooling import FEATURE_MAP, add_broadcast


class LpPoolCache(NamedTuple):
    x: np.ndarray  # (N, C, H, W)
    out: np.ndarray  # (N, C), the L2 norms


class LsePoolCache(NamedTuple):
    weights: np.ndarray  # (N, C, H, W), softmax of x over each channel's H*W positions


@quiet_floats
def global_lp_pool_forward(x: np.ndarray) -> tuple[np.ndarray, LpPoolCache]:
    r"""L2 pooling over the spatial positions of each channel (``lp_pool2d`` with p = 2 and a
    window covering the map: a sum, not a mean, inside the root).

    .. math:: \ell_{nc} = \Big(\sum_{h,w} x_{nchw}^2\Big)^{1/2}
              = m_{nc} \Big(\sum_{h,w} (x_{nchw} / m_{nc})^2\Big)^{1/2}, \qquad
              m_{nc} = \max_{h,w} |x_{nchw}|

    The plain form is used unless its sum of squares overflows or falls below the smallest
    normal number (float32 inputs beyond about 1e19 or below about 1e-19); those channels are
    recomputed in the scaled form, whose squares are at most 1.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)

    Returns
    -------
    out : ndarray, shape (N, C)
    cache : LpPoolCache
    """
    x = require_op_array(x, "x", 4, FEATURE_MAP)
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)  # (N, C, H, W) -> (N, C, H*W)
    squares = np.einsum("ncp,ncp->nc", flat, flat)  # (N, C)
    out = np.sqrt(squares)  # (N, C)
    rescale = ~(squares >= np.finfo(x.dtype).tiny) | np.isinf(squares)  # (N, C); NaN: True
    if rescale.any():  # overflowed, underflowed, all zero, or NaN/inf in x
        rows = flat[rescale]  # (R, H*W), the R channels to recompute
        peak = np.abs(rows).max(axis=1, keepdims=True)  # (R, 1); NaN or inf if x has one
        require_finite_result("global_lp_pool_forward", peak, {"x": x})
        peak[peak == 0] = 1  # an all-zero channel: its norm is 0 either way
        ratio = rows / peak  # (R, H*W), every entry in [-1, 1]
        out[rescale] = np.sqrt(np.einsum("rp,rp->r", ratio, ratio)) * peak[:, 0]
        require_finite_result("global_lp_pool_forward", out, {"x": x})
    return out, LpPoolCache(x, out)


@quiet_floats
def global_lp_pool_backward(
    dout: np.ndarray, cache: LpPoolCache, add_to: np.ndarray | None = None
) -> np.ndarray:
    r"""Each position's share is its value over the norm:
    :math:`\partial L/\partial x_{nchw} = \frac{x_{nchw}}{\ell_{nc}}\,\partial L/\partial
    \ell_{nc}` (taken as 0 for an all-zero channel, where the norm has no derivative).
    When :math:`\bar{\ell} / \ell` overflows (a tiny norm), the ratio :math:`x / \ell`
    (magnitude at most 1) is formed first instead, so that the share cannot overflow.

    Parameters
    ----------
    dout : ndarray, shape (N, C)
    cache : LpPoolCache
    add_to : ndarray, shape (N, C, H, W), optional
        If given, the gradient is added to it in place, and it is returned.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    out = cache.out
    require_shape(dout, out.shape, "dout", "the pooled output's shape")
    safe_norm = np.where(out > 0, out, 1)  # (N, C): an all-zero channel's share is 0
    scale = dout / safe_norm  # (N, C)
    if np.isfinite(scale).all():
        share = cache.x * scale[:, :, None, None]  # (N, C, H, W), a new array
    else:  # a tiny norm (or a NaN in dout): x / l first, every entry in [-1, 1]
        share = cache.x / safe_norm[:, :, None, None]  # (N, C, H, W), a new array
        share *= dout[:, :, None, None]
    return add_broadcast(share, cache.x.shape, add_to)


@quiet_floats
def global_lse_pool_forward(x: np.ndarray) -> tuple[np.ndarray, LsePoolCache]:
    r"""Log-sum-exp over the spatial positions of each channel, computed stably.

    .. math:: s_{nc} = \log \sum_{h,w} e^{x_{nchw}}
              = m_{nc} + \log \sum_{h,w} e^{x_{nchw} - m_{nc}}, \qquad
              m_{nc} = \max_{h,w} x_{nchw}

    Every exponent is <= 0, so nothing overflows; :math:`\max \le s \le \max + \log HW`.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)

    Returns
    -------
    out : ndarray, shape (N, C)
    cache : LsePoolCache
    """
    x = require_op_array(x, "x", 4, FEATURE_MAP)
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)  # (N, C, H, W) -> (N, C, H*W)
    peak = flat.max(axis=2, keepdims=True)  # (N, C, 1)
    exps = np.exp(flat - peak)  # (N, C, H*W), in (0, 1]
    total = exps.sum(axis=2, keepdims=True)  # (N, C, 1), in [1, H*W]
    out = (peak + np.log(total))[:, :, 0]  # (N, C)
    require_finite_result("global_lse_pool_forward", out, {"x": x})  # NaN where x has NaN/+inf
    weights = (exps / total).reshape(x.shape)  # softmax over H*W, back to (N, C, H, W)
    return out, LsePoolCache(weights)


@quiet_floats
def global_lse_pool_backward(
    dout: np.ndarray, cache: LsePoolCache, add_to: np.ndarray | None = None
) -> np.ndarray:
    r"""The gradient of log-sum-exp is the softmax:
    :math:`\partial L/\partial x_{nchw} = \mathrm{softmax}_{hw}(x_{nc})_{hw}\;
    \partial L/\partial s_{nc}` (the shift by the maximum cancels exactly).

    Parameters
    ----------
    dout : ndarray, shape (N, C)
    cache : LsePoolCache
    add_to : ndarray, shape (N, C, H, W), optional
        If given, the gradient is added to it in place, and it is returned.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    require_shape(dout, cache.weights.shape[:2], "dout", "the pooled output's shape")
    share = cache.weights * dout[:, :, None, None]  # (N, C, H, W), a new array
    return add_broadcast(share, cache.weights.shape, add_to)
