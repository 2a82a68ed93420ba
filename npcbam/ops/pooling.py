r"""Pooling: global average/max over H×W (channel attention) and average/max over channels
(spatial attention).

Average pooling spreads the upstream gradient evenly over what it averaged; max pooling routes
it to the winner alone. A tie (several entries equal to the maximum) is resolved by ``ties``:
``"first"`` (default) sends the whole gradient to the **first** maximal index, as PyTorch
2.13's ``torch.max(dim)``, ``max_pool2d`` and ``AdaptiveMaxPool2d`` do (the seed's and the
official code's poolings); ``"split"`` shares it evenly among the k tied entries (each gets
1/k), as ``torch.amax`` does (current timm's CBAM). Away from ties both are the same function.
Max caches record the first winners, which the gradient checker uses to flag kinks.

Every backward takes an optional ``add_to``: CBAM uses its input several times, so the input's
gradient is a sum; ``add_to=dx`` adds this path's share into ``dx`` in place, which is the
``+=`` of the maths without a full-size temporary.

Checks: every forward takes ``x`` float32 or float64 of shape (N, C, H, W) with no empty axis,
and finds a NaN or inf in ``x`` from its own (N, C) or (N, 1, H, W) output, at no extra pass
(a max pooling ignores ``-inf``, which never wins; NaN and ``+inf`` are refused). Every
backward takes ``dout`` of the output's shape; ``dout`` is not scanned (its NaN or inf would
reach ``dx``), and no backward can overflow except by ``add_to``'s own sum.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import (
    quiet_floats,
    require_finite,
    require_finite_result,
    require_op_array,
    require_shape,
)

FEATURE_MAP = "(N, C, H, W)"


class AvgPoolCache(NamedTuple):
    x_shape: tuple[int, int, int, int]  # (N, C, H, W)


class MaxPoolCache(NamedTuple):
    x_shape: tuple[int, int, int, int]  # (N, C, H, W)
    winners: np.ndarray  # int, flat index of the first maximum of each pooled window
    tied: np.ndarray | None = None  # bool (N, C, H, W), every maximal entry; ties="split" only


TIES = ("first", "split")


def check_ties(ties) -> str:
    """``ties`` if it names a tie rule of the max poolings, else ``ValueError``."""
    if not isinstance(ties, str) or ties not in TIES:
        raise ValueError(
            f"ties={ties!r}; expected 'first' (the whole gradient to the first maximum, as "
            "torch.max(dim) and AdaptiveMaxPool2d) or 'split' (shared evenly among tied "
            "maxima, as torch.amax)"
        )
    return ties


def split_share(dout: np.ndarray, tied: np.ndarray, axis) -> np.ndarray:
    """Each tied maximum's share of ``dout`` (``ties="split"``): ``tied / k * dout``, with k
    the number of maxima of the window (summed over ``axis``), broadcast to ``tied``'s shape."""
    count = tied.sum(axis=axis, keepdims=True, dtype=dout.dtype)  # k >= 1 per pooled window
    return tied * (dout / count)


@quiet_floats
def global_avg_pool_forward(x: np.ndarray) -> tuple[np.ndarray, AvgPoolCache]:
    r"""Average over the spatial positions of each channel.

    .. math:: a_{nc} = \frac{1}{HW} \sum_{h,w} x_{nchw}

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)

    Returns
    -------
    out : ndarray, shape (N, C)
    cache : AvgPoolCache
    """
    x = require_op_array(x, "x", 4, FEATURE_MAP)
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)  # (N, C, H, W) -> (N, C, H*W)
    # the mean as a matrix-vector product: BLAS sums about 3x faster than np.mean here; each
    # term x / (HW) is at most max|x| / (HW), so the sum cannot overflow
    out = flat @ np.full(h * w, 1 / (h * w), dtype=x.dtype)  # (N, C)
    require_finite_result("global_avg_pool_forward", out, {"x": x})  # NaN or inf show here
    return out, AvgPoolCache(x.shape)


def global_avg_pool_backward(
    dout: np.ndarray, cache: AvgPoolCache, add_to: np.ndarray | None = None
) -> np.ndarray:
    r"""Every position receives an equal share: :math:`\partial L/\partial x_{nchw} =
    \frac{1}{HW}\, \partial L/\partial a_{nc}`.

    Parameters
    ----------
    dout : ndarray, shape (N, C)
    cache : AvgPoolCache
    add_to : ndarray, shape (N, C, H, W), optional
        If given, the gradient is added to it in place, and it is returned.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    n, c, h, w = cache.x_shape
    require_shape(dout, (n, c), "dout", "the pooled output's shape")
    share = (dout / (h * w))[:, :, None, None]  # (N, C) -> (N, C, 1, 1)
    return add_broadcast(share, cache.x_shape, add_to)


@quiet_floats
def global_max_pool_forward(x: np.ndarray, ties: str = "first") -> tuple[np.ndarray, MaxPoolCache]:
    r"""Maximum over the spatial positions of each channel.

    .. math:: m_{nc} = \max_{h,w} x_{nchw}, \qquad
              (h^*, w^*)_{nc} = \text{first } \arg\max_{h,w} x_{nchw}

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    ties : {"first", "split"}
        How the backward shares a tie's gradient (see the module's docstring).

    Returns
    -------
    out : ndarray, shape (N, C)
    cache : MaxPoolCache (``winners``: shape (N, C), flat index ``h * W + w``)
    """
    x = require_op_array(x, "x", 4, FEATURE_MAP)
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)  # (N, C, H, W) -> (N, C, H*W)
    winners = flat.argmax(axis=2)  # (N, C); argmax returns the first maximum
    out = np.take_along_axis(flat, winners[:, :, None], axis=2)[:, :, 0]  # (N, C)
    require_finite_result("global_max_pool_forward", out, {"x": x})  # a NaN or +inf wins
    tied = None
    if check_ties(ties) == "split":
        tied = x == out[:, :, None, None]  # (N, C, H, W), bool: every maximum
    return out, MaxPoolCache(x.shape, winners, tied)


def global_max_pool_backward(
    dout: np.ndarray, cache: MaxPoolCache, add_to: np.ndarray | None = None
) -> np.ndarray:
    r"""The whole gradient goes to the winner:
    :math:`\partial L/\partial x_{nchw} = [\,(h, w) = (h^*, w^*)_{nc}\,]\;\partial L/\partial
    m_{nc}`; with ``ties="split"``, each of the :math:`k_{nc}` maxima gets
    :math:`\frac{1}{k_{nc}}\,\partial L/\partial m_{nc}`.

    Parameters
    ----------
    dout : ndarray, shape (N, C)
    cache : MaxPoolCache
    add_to : ndarray, shape (N, C, H, W), optional
        If given, the gradient is added to it in place, and it is returned.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    n, c, _, w = cache.x_shape
    require_shape(dout, (n, c), "dout", "the pooled output's shape")
    if cache.tied is not None:  # ties="split"
        share = split_share(dout[:, :, None, None], cache.tied, axis=(2, 3))  # (N, C, H, W)
        return add_broadcast(share, cache.x_shape, add_to)
    dx = np.zeros(cache.x_shape, dtype=dout.dtype) if add_to is None else add_to
    n_index, c_index = np.ogrid[:n, :c]  # (N, 1) and (1, C)
    h_index, w_index = np.divmod(cache.winners, w)  # flat h * W + w -> (h, w), each (N, C)
    dx[n_index, c_index, h_index, w_index] += dout  # one winner per (n, c): no repeats
    return dx


@quiet_floats
def channel_avg_pool_forward(x: np.ndarray) -> tuple[np.ndarray, AvgPoolCache]:
    r"""Average over channels at each position.

    .. math:: \bar{s}_{n1hw} = \frac{1}{C} \sum_{c} x_{nchw}

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)

    Returns
    -------
    out : ndarray, shape (N, 1, H, W)
    cache : AvgPoolCache
    """
    x = require_op_array(x, "x", 4, FEATURE_MAP)
    out = x.mean(axis=1, keepdims=True)  # (N, 1, H, W)
    if not np.isfinite(out).all():  # a NaN or inf in x, or a sum of huge values overflowed
        require_finite(x, "x")
        out = (x / x.shape[1]).sum(axis=1, keepdims=True)  # terms <= max|x| / C: no overflow
        require_finite_result("channel_avg_pool_forward", out, {"x": x})
    return out, AvgPoolCache(x.shape)


def channel_avg_pool_backward(
    dout: np.ndarray, cache: AvgPoolCache, add_to: np.ndarray | None = None
) -> np.ndarray:
    r""":math:`\partial L/\partial x_{nchw} = \frac{1}{C}\,\partial L/\partial \bar{s}_{n1hw}`.

    Parameters
    ----------
    dout : ndarray, shape (N, 1, H, W)
    cache : AvgPoolCache
    add_to : ndarray, shape (N, C, H, W), optional
        If given, the gradient is added to it in place, and it is returned.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    n, channels, h, w = cache.x_shape
    require_shape(dout, (n, 1, h, w), "dout", "the pooled output's shape")
    return add_broadcast(dout / channels, cache.x_shape, add_to)


@quiet_floats
def channel_max_pool_forward(x: np.ndarray, ties: str = "first") -> tuple[np.ndarray, MaxPoolCache]:
    r"""Maximum over channels at each position.

    .. math:: \hat{s}_{n1hw} = \max_{c} x_{nchw}, \qquad
              c^*_{nhw} = \text{first } \arg\max_c x_{nchw}

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    ties : {"first", "split"}
        How the backward shares a tie's gradient (see the module's docstring).

    Returns
    -------
    out : ndarray, shape (N, 1, H, W)
    cache : MaxPoolCache (``winners``: shape (N, 1, H, W), the channel index)
    """
    x = require_op_array(x, "x", 4, FEATURE_MAP)
    channels = x.shape[1]
    out = x.max(axis=1, keepdims=True)  # (N, 1, H, W)
    require_finite_result("channel_max_pool_forward", out, {"x": x})  # a NaN or +inf wins
    # The first maximal channel, without x.argmax(axis=1) (about 10x slower along a non-last
    # axis): among the channels equal to the maximum, the largest reversed index C-1-c wins.
    reversed_index = np.arange(channels - 1, -1, -1, dtype=np.min_scalar_type(channels))
    is_max = x == out  # (N, C, H, W), bool
    winners = (channels - 1) - (is_max * reversed_index[:, None, None]).max(axis=1, keepdims=True)
    tied = is_max if check_ties(ties) == "split" else None  # (N, C, H, W): every maximum
    return out, MaxPoolCache(x.shape, winners.astype(np.intp), tied)  # winners: (N, 1, H, W)


def channel_max_pool_backward(
    dout: np.ndarray, cache: MaxPoolCache, add_to: np.ndarray | None = None
) -> np.ndarray:
    r""":math:`\partial L/\partial x_{nchw} = [\,c = c^*_{nhw}\,]\;\partial L/\partial
    \hat{s}_{n1hw}`; with ``ties="split"``, each of the :math:`k_{nhw}` maxima gets
    :math:`\frac{1}{k_{nhw}}\,\partial L/\partial \hat{s}_{n1hw}`.

    Parameters
    ----------
    dout : ndarray, shape (N, 1, H, W)
    cache : MaxPoolCache
    add_to : ndarray, shape (N, C, H, W), optional
        If given, the gradient is added to it in place, and it is returned.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    n, _, h, w = cache.x_shape
    require_shape(dout, (n, 1, h, w), "dout", "the pooled output's shape")
    if cache.tied is not None:  # ties="split"
        share = split_share(dout, cache.tied, axis=1)  # (N, C, H, W)
        return add_broadcast(share, cache.x_shape, add_to)
    dx = np.zeros(cache.x_shape, dtype=dout.dtype) if add_to is None else add_to
    n_index, _, h_index, w_index = np.ogrid[:n, :1, :h, :w]
    dx[n_index, cache.winners, h_index, w_index] += dout  # one winner per position: no repeats
    return dx


def add_broadcast(share: np.ndarray, shape, add_to: np.ndarray | None) -> np.ndarray:
    """``add_to += share`` (broadcast to ``shape``), or, without ``add_to``, ``share`` broadcast
    to ``shape`` as a new array (``share`` itself when it already has that shape: callers pass
    a fresh array). The ``add_to`` convention of every pooling backward."""
    if add_to is None:
        if share.shape == tuple(shape):
            return share
        return np.broadcast_to(share, shape).copy()
    add_to += share
    return add_to
