r"""Two more global poolings over H×W for channel attention: L2 ("lp") and log-sum-exp ("lse").

The CBAM paper pools with average and max; the official code also offers the power-average
``lp_pool2d`` with p = 2 and a log-sum-exp pooling. Both are smooth where max is not: L2
pooling weighs each position by its own value, log-sum-exp by its softmax weight, a "soft"
maximum. Same conventions as :mod:`npcbam.ops.pooling` (``add_to`` in the backward, through
:func:`~npcbam.ops.pooling.add_broadcast`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam.ops.pooling import add_broadcast


class LpPoolCache(NamedTuple):
    x: np.ndarray  # (N, C, H, W)
    out: np.ndarray  # (N, C), the L2 norms


class LsePoolCache(NamedTuple):
    weights: np.ndarray  # (N, C, H, W), softmax of x over each channel's H*W positions


def global_lp_pool_forward(x: np.ndarray) -> tuple[np.ndarray, LpPoolCache]:
    r"""L2 pooling over the spatial positions of each channel (``lp_pool2d`` with p = 2 and a
    window covering the map: a sum, not a mean, inside the root).

    .. math:: \ell_{nc} = \Big(\sum_{h,w} x_{nchw}^2\Big)^{1/2}

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)

    Returns
    -------
    out : ndarray, shape (N, C)
    cache : LpPoolCache
    """
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)  # (N, C, H, W) -> (N, C, H*W)
    out = np.sqrt(np.einsum("ncp,ncp->nc", flat, flat))  # (N, C)
    return out, LpPoolCache(x, out)


def global_lp_pool_backward(
    dout: np.ndarray, cache: LpPoolCache, add_to: np.ndarray | None = None
) -> np.ndarray:
    r"""Each position's share is its value over the norm:
    :math:`\partial L/\partial x_{nchw} = \frac{x_{nchw}}{\ell_{nc}}\,\partial L/\partial
    \ell_{nc}` (taken as 0 for an all-zero channel, where the norm has no derivative).

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
    scale = np.divide(dout, out, out=np.zeros_like(dout), where=out > 0)  # (N, C)
    share = cache.x * scale[:, :, None, None]  # (N, C, H, W), a new array
    return add_broadcast(share, cache.x.shape, add_to)


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
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)  # (N, C, H, W) -> (N, C, H*W)
    peak = flat.max(axis=2, keepdims=True)  # (N, C, 1)
    exps = np.exp(flat - peak)  # (N, C, H*W), in (0, 1]
    total = exps.sum(axis=2, keepdims=True)  # (N, C, 1), in [1, H*W]
    out = (peak + np.log(total))[:, :, 0]  # (N, C)
    weights = (exps / total).reshape(x.shape)  # softmax over H*W, back to (N, C, H, W)
    return out, LsePoolCache(weights)


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
    share = cache.weights * dout[:, :, None, None]  # (N, C, H, W), a new array
    return add_broadcast(share, cache.weights.shape, add_to)
