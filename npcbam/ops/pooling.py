r"""Pooling: global average/max over H×W (channel attention) and average/max over channels
(spatial attention).

Average pooling spreads the upstream gradient evenly over what it averaged; max pooling routes
it to the winner alone. Ties go to the **first** maximal index, as PyTorch 2.13's
``torch.max(dim)`` and ``AdaptiveMaxPool2d`` do (``amax`` would split it evenly instead).
Max caches record the winners, which the gradient checker uses to flag kinks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class AvgPoolCache(NamedTuple):
    x_shape: tuple[int, int, int, int]  # (N, C, H, W)


class MaxPoolCache(NamedTuple):
    x_shape: tuple[int, int, int, int]  # (N, C, H, W)
    winners: np.ndarray  # int, flat index of the first maximum of each pooled window


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
    return x.mean(axis=(2, 3)), AvgPoolCache(x.shape)


def global_avg_pool_backward(dout: np.ndarray, cache: AvgPoolCache) -> np.ndarray:
    r"""Every position receives an equal share: :math:`\partial L/\partial x_{nchw} =
    \frac{1}{HW}\, \partial L/\partial a_{nc}`.

    Parameters
    ----------
    dout : ndarray, shape (N, C)
    cache : AvgPoolCache

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    _, _, h, w = cache.x_shape
    share = dout / (h * w)  # (N, C)
    return np.broadcast_to(share[:, :, None, None], cache.x_shape).copy()


def global_max_pool_forward(x: np.ndarray) -> tuple[np.ndarray, MaxPoolCache]:
    r"""Maximum over the spatial positions of each channel.

    .. math:: m_{nc} = \max_{h,w} x_{nchw}, \qquad
              (h^*, w^*)_{nc} = \text{first } \arg\max_{h,w} x_{nchw}

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)

    Returns
    -------
    out : ndarray, shape (N, C)
    cache : MaxPoolCache (``winners``: shape (N, C), flat index ``h * W + w``)
    """
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)  # (N, C, H, W) -> (N, C, H*W)
    winners = flat.argmax(axis=2)  # (N, C); argmax returns the first maximum
    out = np.take_along_axis(flat, winners[:, :, None], axis=2)[:, :, 0]  # (N, C)
    return out, MaxPoolCache(x.shape, winners)


def global_max_pool_backward(dout: np.ndarray, cache: MaxPoolCache) -> np.ndarray:
    r"""The whole gradient goes to the winner:
    :math:`\partial L/\partial x_{nchw} = [\,(h, w) = (h^*, w^*)_{nc}\,]\;\partial L/\partial
    m_{nc}`.

    Parameters
    ----------
    dout : ndarray, shape (N, C)
    cache : MaxPoolCache

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    n, c, h, w = cache.x_shape
    dflat = np.zeros((n, c, h * w), dtype=dout.dtype)  # (N, C, H*W)
    np.put_along_axis(dflat, cache.winners[:, :, None], dout[:, :, None], axis=2)
    return dflat.reshape(cache.x_shape)  # (N, C, H*W) -> (N, C, H, W)


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
    return x.mean(axis=1, keepdims=True), AvgPoolCache(x.shape)


def channel_avg_pool_backward(dout: np.ndarray, cache: AvgPoolCache) -> np.ndarray:
    r""":math:`\partial L/\partial x_{nchw} = \frac{1}{C}\,\partial L/\partial \bar{s}_{n1hw}`.

    Parameters
    ----------
    dout : ndarray, shape (N, 1, H, W)
    cache : AvgPoolCache

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    channels = cache.x_shape[1]
    return np.broadcast_to(dout / channels, cache.x_shape).copy()


def channel_max_pool_forward(x: np.ndarray) -> tuple[np.ndarray, MaxPoolCache]:
    r"""Maximum over channels at each position.

    .. math:: \hat{s}_{n1hw} = \max_{c} x_{nchw}, \qquad
              c^*_{nhw} = \text{first } \arg\max_c x_{nchw}

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)

    Returns
    -------
    out : ndarray, shape (N, 1, H, W)
    cache : MaxPoolCache (``winners``: shape (N, 1, H, W), the channel index)
    """
    winners = x.argmax(axis=1)[:, None]  # (N, H, W) -> (N, 1, H, W); first maximum
    out = np.take_along_axis(x, winners, axis=1)  # (N, 1, H, W)
    return out, MaxPoolCache(x.shape, winners)


def channel_max_pool_backward(dout: np.ndarray, cache: MaxPoolCache) -> np.ndarray:
    r""":math:`\partial L/\partial x_{nchw} = [\,c = c^*_{nhw}\,]\;\partial L/\partial
    \hat{s}_{n1hw}`.

    Parameters
    ----------
    dout : ndarray, shape (N, 1, H, W)
    cache : MaxPoolCache

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    dx = np.zeros(cache.x_shape, dtype=dout.dtype)
    np.put_along_axis(dx, cache.winners, dout, axis=1)
    return dx
