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
    n_index, c_index = np.ogrid[:n, :c]  # (N, 1) and (1, C)
    # flat index of x[n, c, h*, w*] in x seen as 1-D, as the backward's: one 1-D gather, about
    # half the time of np.take_along_axis, which builds an index array per axis
    flat_index = (n_index * c + c_index) * (h * w) + winners  # (N, C)
    out = flat.reshape(-1)[flat_index]  # (N, C)
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
    n, c, h, w = cache.x_shape
    require_shape(dout, (n, c), "dout", "the pooled output's shape")
    if cache.tied is not None:  # ties="split"
        share = split_share(dout[:, :, None, None], cache.tied, axis=(2, 3))  # (N, C, H, W)
        return add_broadcast(share, cache.x_shape, add_to)
    dx = np.zeros(cache.x_shape, dtype=dout.dtype) if add_to is None else add_to
    n_index, c_index = np.ogrid[:n, :c]  # (N, 1) and (1, C)
    # flat index of x[n, c, h*, w*] in x seen as 1-D: ((n * C + c) * H + h*) * W + w*
    flat_index = (n_index * c + c_index) * (h * w) + cache.winners  # (N, C)
    scatter_add(dx, flat_index, dout)  # one winner per (n, c): no repeats
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
    n, c, h, w = x.shape
    # the mean as a product with a vector of 1/C, one (1, C) @ (C, H*W) per sample: BLAS sums
    # about 5x faster than x.mean(axis=1) when H*W is small (0.1 against 0.5 ms at
    # (64, 512, 7, 7)); each term x / C is at most max|x| / C, so the sum cannot overflow
    weights = np.full((1, c), 1 / c, dtype=x.dtype)  # (1, C)
    out = (weights @ x.reshape(n, c, h * w)).reshape(n, 1, h, w)  # (N, 1, H*W) -> (N, 1, H, W)
    require_finite_result("channel_avg_pool_forward", out, {"x": x})  # NaN or inf show here
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
    out = max_over_channels(x)  # (N, 1, H, W)
    require_finite_result("channel_max_pool_forward", out, {"x": x})  # a NaN or +inf wins
    # The first maximal channel, without x.argmax(axis=1) (about 10x slower along a non-last
    # axis): among the channels equal to the maximum, the largest reversed index C-1-c wins.
    reversed_index = np.arange(channels - 1, -1, -1, dtype=np.min_scalar_type(channels))
    is_max = x == out  # (N, C, H, W), bool
    tied = is_max if check_ties(ties) == "split" else None  # (N, C, H, W): every maximum
    # the scores (C-1-c where x is maximal, else 0) overwrite the mask's own bytes (a bool is
    # one byte) when an index fits in a byte and the mask is not kept: one temporary a quarter
    # of x's size less, about 15 % of this function's time
    in_place = reversed_index.dtype == np.uint8 and tied is None
    score = np.multiply(
        is_max, reversed_index[:, None, None], out=is_max.view(np.uint8) if in_place else None
    )  # (N, C, H, W)
    winners = (channels - 1) - max_over_channels(score)
    return out, MaxPoolCache(x.shape, winners.astype(np.intp), tied)  # winners: (N, 1, H, W)


def max_over_channels(a: np.ndarray) -> np.ndarray:
    """``a.max(axis=1, keepdims=True)`` by halving: the maximum of the first and the second
    half of the channels, then of the halves of that, until one channel is left (an odd
    count folds its last channel into the first).

    Same values (a maximum does not depend on the order of comparisons; NaN propagates), but
    each ``np.maximum`` runs over long contiguous rows, where ``a.max(axis=1)`` reduces in
    inner loops of length H*W: at (64, 512, 7, 7) 0.3 ms instead of 3.5 ms (float32, one
    thread, data in cache; the channel max pooling as a whole, on data out of cache, about
    1.5 ms instead of 5). One temporary of half ``a``'s size, reused at every level.

    Parameters
    ----------
    a : ndarray, shape (N, C, H, W)

    Returns
    -------
    ndarray, shape (N, 1, H, W)
    """
    count = a.shape[1]
    if count == 1:
        return a.copy()
    half = count // 2
    pairs = np.maximum(a[:, :half], a[:, half : 2 * half])  # (N, C // 2, H, W)
    if count % 2:
        np.maximum(pairs[:, :1], a[:, -1:], out=pairs[:, :1])
    count = half
    while count > 1:  # pairs[:, :count] holds the maxima still in the running
        half = count // 2
        np.maximum(pairs[:, :half], pairs[:, half : 2 * half], out=pairs[:, :half])
        if count % 2:
            np.maximum(pairs[:, :1], pairs[:, count - 1 : count], out=pairs[:, :1])
        count = half
    return pairs[:, :1].copy()  # (N, 1, H, W), without holding on to the temporary


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
    n, channels, h, w = cache.x_shape
    require_shape(dout, (n, 1, h, w), "dout", "the pooled output's shape")
    if cache.tied is not None:  # ties="split"
        share = split_share(dout, cache.tied, axis=1)  # (N, C, H, W)
        return add_broadcast(share, cache.x_shape, add_to)
    dx = np.zeros(cache.x_shape, dtype=dout.dtype) if add_to is None else add_to
    n_index, _, h_index, w_index = np.ogrid[:n, :1, :h, :w]
    # flat index of x[n, c*, h, w] in x seen as 1-D: ((n * C + c*) * H + h) * W + w
    flat_index = (n_index * channels + cache.winners) * (h * w) + h_index * w + w_index
    scatter_add(dx, flat_index, dout)  # one winner per position: no repeats
    return dx


def scatter_add(dx: np.ndarray, flat_index: np.ndarray, values: np.ndarray) -> None:
    """``dx.flat[flat_index] += values`` (no index repeated): the winners' share of a max
    pooling's backward. Through a 1-D view of ``dx`` when it is C-contiguous (every ``dx`` made
    here is): one flat index costs about a third of the time of indexing ``dx`` with four
    broadcast index arrays (n, c, h, w)."""
    target = dx.reshape(-1) if dx.flags.c_contiguous else dx.flat  # (N*C*H*W,)
    target[flat_index] += values


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
