r"""Naive loop versions of every op: slow, obviously right, the oracles for tests and notebooks.

Each function spells out the definition element by element with Python loops (scalar maths
from :mod:`math`), so that it can be checked against the equations by eye. They take and return
the same shapes as the vectorized ops in :mod:`npcbam.ops`; backward functions take the forward's
*inputs* rather than a cache. Keep inputs tiny: these run at Python speed.
"""

from __future__ import annotations

import math

import numpy as np


def sigmoid_naive(z: np.ndarray) -> np.ndarray:
    """:math:`1/(1+e^{-z})` one element at a time, using the branch whose exponent is <= 0."""
    out = np.empty_like(z)
    for idx, value in np.ndenumerate(z):
        if value >= 0:
            out[idx] = 1.0 / (1.0 + math.exp(-value))
        else:
            e = math.exp(value)
            out[idx] = e / (1.0 + e)
    return out


def sigmoid_backward_naive(dout: np.ndarray, z: np.ndarray) -> np.ndarray:
    """:math:`\\delta \\cdot \\sigma(z)(1-\\sigma(z))` element by element."""
    s = sigmoid_naive(z)
    dz = np.empty_like(dout)
    for idx in np.ndindex(*z.shape):
        dz[idx] = dout[idx] * s[idx] * (1.0 - s[idx])
    return dz


def relu_naive(z: np.ndarray) -> np.ndarray:
    """:math:`\\max(z, 0)` element by element."""
    out = np.empty_like(z)
    for idx, value in np.ndenumerate(z):
        out[idx] = value if value > 0 else 0.0
    return out


def relu_backward_naive(dout: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Pass the gradient where :math:`z > 0`, zero elsewhere."""
    dz = np.zeros_like(dout)
    for idx, value in np.ndenumerate(z):
        if value > 0:
            dz[idx] = dout[idx]
    return dz


def global_avg_pool_naive(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C): sum each channel's H×W values, divide by H·W."""
    n_, c_, h_, w_ = x.shape
    out = np.zeros((n_, c_), dtype=x.dtype)
    for n in range(n_):
        for c in range(c_):
            total = 0.0
            for h in range(h_):
                for w in range(w_):
                    total += x[n, c, h, w]
            out[n, c] = total / (h_ * w_)
    return out


def global_avg_pool_backward_naive(dout: np.ndarray, x_shape) -> np.ndarray:
    """Each of the H·W positions gets 1/(H·W) of its channel's gradient."""
    n_, c_, h_, w_ = x_shape
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for n in range(n_):
        for c in range(c_):
            for h in range(h_):
                for w in range(w_):
                    dx[n, c, h, w] = dout[n, c] / (h_ * w_)
    return dx


def global_max_pool_naive(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, H, W) -> (N, C) and the first winner's flat index h·W + w (strict ``>``)."""
    n_, c_, h_, w_ = x.shape
    out = np.zeros((n_, c_), dtype=x.dtype)
    winners = np.zeros((n_, c_), dtype=np.int64)
    for n in range(n_):
        for c in range(c_):
            best, best_index = x[n, c, 0, 0], 0
            for h in range(h_):
                for w in range(w_):
                    if x[n, c, h, w] > best:  # strict: a later tie never replaces the first
                        best, best_index = x[n, c, h, w], h * w_ + w
            out[n, c], winners[n, c] = best, best_index
    return out, winners


def global_max_pool_backward_naive(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The whole gradient of each channel goes to its first maximum."""
    _, winners = global_max_pool_naive(x)
    n_, c_, _, w_ = x.shape
    dx = np.zeros(x.shape, dtype=dout.dtype)
    for n in range(n_):
        for c in range(c_):
            h, w = divmod(int(winners[n, c]), w_)
            dx[n, c, h, w] = dout[n, c]
    return dx


def channel_avg_pool_naive(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, 1, H, W): the mean over channels at each position."""
    n_, c_, h_, w_ = x.shape
    out = np.zeros((n_, 1, h_, w_), dtype=x.dtype)
    for n in range(n_):
        for h in range(h_):
            for w in range(w_):
                out[n, 0, h, w] = sum(x[n, c, h, w] for c in range(c_)) / c_
    return out


def channel_avg_pool_backward_naive(dout: np.ndarray, x_shape) -> np.ndarray:
    """Each channel gets 1/C of its position's gradient."""
    n_, c_, h_, w_ = x_shape
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for n in range(n_):
        for c in range(c_):
            for h in range(h_):
                for w in range(w_):
                    dx[n, c, h, w] = dout[n, 0, h, w] / c_
    return dx


def channel_max_pool_naive(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, H, W) -> (N, 1, H, W) and the first winning channel (N, 1, H, W)."""
    n_, c_, h_, w_ = x.shape
    out = np.zeros((n_, 1, h_, w_), dtype=x.dtype)
    winners = np.zeros((n_, 1, h_, w_), dtype=np.int64)
    for n in range(n_):
        for h in range(h_):
            for w in range(w_):
                best_c = 0
                for c in range(1, c_):
                    if x[n, c, h, w] > x[n, best_c, h, w]:  # strict: first maximum wins ties
                        best_c = c
                out[n, 0, h, w], winners[n, 0, h, w] = x[n, best_c, h, w], best_c
    return out, winners


def channel_max_pool_backward_naive(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The whole gradient of each position goes to its first maximal channel."""
    _, winners = channel_max_pool_naive(x)
    n_, _, h_, w_ = x.shape
    dx = np.zeros(x.shape, dtype=dout.dtype)
    for n in range(n_):
        for h in range(h_):
            for w in range(w_):
                dx[n, winners[n, 0, h, w], h, w] = dout[n, 0, h, w]
    return dx


def linear_naive(x: np.ndarray, weight: np.ndarray, bias=None) -> np.ndarray:
    """:math:`y_{no} = \\sum_i x_{ni} W_{oi} + b_o` with explicit sums."""
    n_, d_in = x.shape
    d_out = weight.shape[0]
    out = np.zeros((n_, d_out), dtype=x.dtype)
    for n in range(n_):
        for o in range(d_out):
            total = 0.0 if bias is None else bias[o]
            for i in range(d_in):
                total += x[n, i] * weight[o, i]
            out[n, o] = total
    return out


def linear_backward_naive(dout: np.ndarray, x: np.ndarray, weight: np.ndarray, with_bias=False):
    """Accumulate every term :math:`x_{ni} W_{oi}` contributes to dx, dW and db."""
    dx = np.zeros_like(x)
    dweight = np.zeros_like(weight)
    dbias = np.zeros(weight.shape[0], dtype=dout.dtype)
    for n in range(x.shape[0]):
        for o in range(weight.shape[0]):
            dbias[o] += dout[n, o]
            for i in range(x.shape[1]):
                dx[n, i] += dout[n, o] * weight[o, i]
                dweight[o, i] += dout[n, o] * x[n, i]
    return dx, dweight, (dbias if with_bias else None)


def gate_naive(x: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """:math:`y = g \\odot x`, indexing the gate at 0 along its size-1 axes."""
    out = np.empty_like(x)
    for idx in np.ndindex(*x.shape):
        g_idx = tuple(i if g > 1 else 0 for i, g in zip(idx, gate.shape))
        out[idx] = x[idx] * gate[g_idx]
    return out


def gate_backward_naive(dout: np.ndarray, x: np.ndarray, gate: np.ndarray):
    """Product rule element by element; the gate's gradient collects every use of it."""
    dx = np.empty_like(x)
    dgate = np.zeros_like(gate)
    for idx in np.ndindex(*x.shape):
        g_idx = tuple(i if g > 1 else 0 for i, g in zip(idx, gate.shape))
        dx[idx] = dout[idx] * gate[g_idx]
        dgate[g_idx] += dout[idx] * x[idx]
    return dx, dgate


def conv2d_naive(x, weight, bias=None, stride=(1, 1), padding=(0, 0)) -> np.ndarray:
    """Direct definition: for each output pixel, sum kernel × input over the window."""
    (sh, sw), (ph, pw) = stride, padding
    n_, c_, h_, w_ = x.shape
    f_, _, kh, kw = weight.shape
    ho, wo = (h_ + 2 * ph - kh) // sh + 1, (w_ + 2 * pw - kw) // sw + 1
    out = np.zeros((n_, f_, ho, wo), dtype=x.dtype)
    for n in range(n_):
        for f in range(f_):
            for i in range(ho):
                for j in range(wo):
                    total = 0.0 if bias is None else bias[f]
                    for c in range(c_):
                        for u in range(kh):
                            for v in range(kw):
                                y, z = i * sh + u - ph, j * sw + v - pw
                                if 0 <= y < h_ and 0 <= z < w_:  # outside: zero padding
                                    total += weight[f, c, u, v] * x[n, c, y, z]
                    out[n, f, i, j] = total
    return out


def conv2d_backward_naive(dout, x, weight, stride=(1, 1), padding=(0, 0), with_bias=False):
    """Every term :math:`W_{fcuv} x_{ncyz}` of the forward sum sends its share back.

    Overlapping windows (stride < kernel) reach the same input pixel several times: ``+=``.
    """
    (sh, sw), (ph, pw) = stride, padding
    n_, c_, h_, w_ = x.shape
    f_, _, kh, kw = weight.shape
    _, _, ho, wo = dout.shape
    dx = np.zeros_like(x)
    dweight = np.zeros_like(weight)
    dbias = np.zeros(f_, dtype=dout.dtype)
    for n in range(n_):
        for f in range(f_):
            for i in range(ho):
                for j in range(wo):
                    g = dout[n, f, i, j]
                    dbias[f] += g
                    for c in range(c_):
                        for u in range(kh):
                            for v in range(kw):
                                y, z = i * sh + u - ph, j * sw + v - pw
                                if 0 <= y < h_ and 0 <= z < w_:
                                    dx[n, c, y, z] += g * weight[f, c, u, v]
                                    dweight[f, c, u, v] += g * x[n, c, y, z]
    return dx, dweight, (dbias if with_bias else None)
