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


def conv2d_naive(
    x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1)
) -> np.ndarray:
    """Direct definition: for each output pixel, sum kernel × input over the window; tap
    (u, v) of a kernel dilated by (dh, dw) reads the pixel (dh·u, dw·v) from the window's
    corner."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n_, c_, h_, w_ = x.shape
    f_, _, kh, kw = weight.shape
    ho = (h_ + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w_ + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n_, f_, ho, wo), dtype=x.dtype)
    for n in range(n_):
        for f in range(f_):
            for i in range(ho):
                for j in range(wo):
                    total = 0.0 if bias is None else bias[f]
                    for c in range(c_):
                        for u in range(kh):
                            for v in range(kw):
                                y, z = i * sh + dh * u - ph, j * sw + dw * v - pw
                                if 0 <= y < h_ and 0 <= z < w_:  # outside: zero padding
                                    total += weight[f, c, u, v] * x[n, c, y, z]
                    out[n, f, i, j] = total
    return out


def conv2d_backward_naive(
    dout, x, weight, stride=(1, 1), padding=(0, 0), with_bias=False, dilation=(1, 1)
):
    """Every term :math:`W_{fcuv} x_{ncyz}` of the forward sum sends its share back.

    Overlapping windows (stride < kernel) reach the same input pixel several times: ``+=``.
    With a dilation, tap (u, v) meets the pixel (dh·u, dw·v) from the window's corner.
    """
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
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
                                y, z = i * sh + dh * u - ph, j * sw + dw * v - pw
                                if 0 <= y < h_ and 0 <= z < w_:
                                    dx[n, c, y, z] += g * weight[f, c, u, v]
                                    dweight[f, c, u, v] += g * x[n, c, y, z]
    return dx, dweight, (dbias if with_bias else None)


def conv_transpose2d_naive(
    x, weight, bias=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0)
) -> np.ndarray:
    """Scatter definition of the transposed convolution.

    Every input pixel :math:`x_{ncij}`, times the kernel :math:`W_{c f}`, is added onto an
    uncropped output at rows :math:`s_h i + u` and columns :math:`s_w j + v`. That output has
    :math:`(H - 1)s_h + k_h` rows (the reach of the last scatter) plus ``output_padding`` rows
    at the bottom that nothing is scattered onto; ``padding`` rows are then cropped from its top
    and from its bottom (likewise for columns), and every pixel gets its channel's bias.
    ``weight`` is (C_in, C_out, kh, kw), PyTorch's layout.
    """
    (sh, sw), (ph, pw), (oh, ow) = stride, padding, output_padding
    n_, c_, h_, w_ = x.shape
    _, f_, kh, kw = weight.shape
    full = np.zeros((n_, f_, (h_ - 1) * sh + kh + oh, (w_ - 1) * sw + kw + ow), dtype=x.dtype)
    for n, c, i, j in np.ndindex(n_, c_, h_, w_):
        for f, u, v in np.ndindex(f_, kh, kw):
            full[n, f, sh * i + u, sw * j + v] += x[n, c, i, j] * weight[c, f, u, v]
    ho, wo = full.shape[2] - 2 * ph, full.shape[3] - 2 * pw
    out = np.zeros((n_, f_, ho, wo), dtype=x.dtype)
    for n, f, o, q in np.ndindex(n_, f_, ho, wo):
        out[n, f, o, q] = full[n, f, ph + o, pw + q] + (0.0 if bias is None else bias[f])
    return out


def conv_transpose2d_backward_naive(
    dout, x, weight, stride=(1, 1), padding=(0, 0), output_padding=(0, 0), with_bias=False
):
    """Every scattered term :math:`x_{ncij} W_{cfuv}` sends its share of the gradient back.

    The gradient of the uncropped output is ``dout`` put back where the crop took it from, zero
    on the cropped rows and columns; a term that landed on a cropped pixel gets nothing.
    """
    (sh, sw), (ph, pw), (oh, ow) = stride, padding, output_padding
    n_, c_, h_, w_ = x.shape
    _, f_, kh, kw = weight.shape
    _, _, ho, wo = dout.shape
    dfull = np.zeros((n_, f_, (h_ - 1) * sh + kh + oh, (w_ - 1) * sw + kw + ow), dtype=dout.dtype)
    for n, f, o, q in np.ndindex(n_, f_, ho, wo):
        dfull[n, f, ph + o, pw + q] = dout[n, f, o, q]
    dx = np.zeros_like(x)
    dweight = np.zeros_like(weight)
    for n, c, i, j in np.ndindex(n_, c_, h_, w_):
        for f, u, v in np.ndindex(f_, kh, kw):
            g = dfull[n, f, sh * i + u, sw * j + v]
            dx[n, c, i, j] += g * weight[c, f, u, v]
            dweight[c, f, u, v] += g * x[n, c, i, j]
    dbias = np.zeros(f_, dtype=dout.dtype)
    for n, f, o, q in np.ndindex(n_, f_, ho, wo):
        dbias[f] += dout[n, f, o, q]
    return dx, dweight, (dbias if with_bias else None)


def batch_statistics_naive(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance (divide by M = N·H·W) with explicit sums."""
    n_, c_, h_, w_ = x.shape
    m = n_ * h_ * w_
    mean = np.zeros(c_)
    var = np.zeros(c_)
    for c in range(c_):
        total = 0.0
        for n, i, j in np.ndindex(n_, h_, w_):
            total += x[n, c, i, j]
        mean[c] = total / m
        squares = 0.0
        for n, i, j in np.ndindex(n_, h_, w_):
            squares += (x[n, c, i, j] - mean[c]) ** 2
        var[c] = squares / m
    return mean, var


def batchnorm2d_naive(x, gamma, beta, eps=1e-5, running_mean=None, running_var=None) -> np.ndarray:
    """:math:`y = \\gamma_c (x - \\mu_c) / \\sqrt{\\sigma^2_c + \\epsilon} + \\beta_c` element by
    element: with the batch's own statistics (training) when ``running_mean`` and
    ``running_var`` are None, otherwise with those (evaluation)."""
    if running_mean is None:
        mean, var = batch_statistics_naive(x)
    else:
        mean, var = running_mean, running_var
    out = np.empty_like(x)
    for n, c, i, j in np.ndindex(*x.shape):
        out[n, c, i, j] = gamma[c] * (x[n, c, i, j] - mean[c]) / math.sqrt(var[c] + eps) + beta[c]
    return out


def batchnorm2d_backward_naive(
    dout, x, gamma, eps=1e-5, running_mean=None, running_var=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`batchnorm2d_naive` through the explicit Jacobian of each channel.

    With batch statistics, the M = N·H·W outputs of a channel depend on all M of its inputs.
    By the chain rule through :math:`\\mu` and :math:`\\sigma^2`, with
    :math:`\\partial\\mu/\\partial x_l = 1/M`, :math:`\\partial\\sigma^2/\\partial x_l =
    2(x_l - \\mu)/M` and :math:`s = (\\sigma^2 + \\epsilon)^{-1/2}`:

    .. math:: J_{kl} = \\frac{\\partial y_k}{\\partial x_l} = \\gamma \\Big(
              ([k = l] - \\frac{\\partial\\mu}{\\partial x_l})\\, s
              - (x_k - \\mu)\\, \\tfrac12 s^3 \\frac{\\partial\\sigma^2}{\\partial x_l}\\Big)

    and :math:`\\partial L/\\partial x_l = \\sum_k \\delta_k J_{kl}`; each entry is built and
    summed by loops. With running statistics the Jacobian is diagonal, :math:`\\gamma s`.
    """
    n_, c_, h_, w_ = x.shape
    training = running_mean is None
    if training:
        mean, var = batch_statistics_naive(x)
    else:
        mean, var = running_mean, running_var
    positions = list(np.ndindex(n_, h_, w_))
    m = len(positions)
    dx = np.zeros_like(x)
    dgamma = np.zeros(c_)
    dbeta = np.zeros(c_)
    for c in range(c_):
        s = 1.0 / math.sqrt(var[c] + eps)
        for row, (n, i, j) in enumerate(positions):  # output y_row
            dbeta[c] += dout[n, c, i, j]
            dgamma[c] += dout[n, c, i, j] * (x[n, c, i, j] - mean[c]) * s
            for col, (n2, i2, j2) in enumerate(positions):  # input x_col
                if training:
                    dmean = 1.0 / m
                    dvar = 2.0 * (x[n2, c, i2, j2] - mean[c]) / m
                    jacobian = gamma[c] * (
                        ((1.0 if row == col else 0.0) - dmean) * s
                        - (x[n, c, i, j] - mean[c]) * 0.5 * s**3 * dvar
                    )
                else:
                    jacobian = gamma[c] * s if row == col else 0.0
                dx[n2, c, i2, j2] += dout[n, c, i, j] * jacobian
    return dx, dgamma, dbeta


def softmax_cross_entropy_naive(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean over rows of :math:`-\\log \\mathrm{softmax}(z_n)_{y_n} = \\log\\sum_k e^{z_{nk}} -
    z_{n y_n}`, each log-sum-exp computed as :math:`m + \\log\\sum_k e^{z_{nk} - m}` with
    :math:`m` the row's maximum (no exponent above 0, so nothing overflows)."""
    n_, k_ = logits.shape
    total = 0.0
    for n in range(n_):
        top = max(float(logits[n, k]) for k in range(k_))
        log_sum_exp = top + math.log(sum(math.exp(logits[n, k] - top) for k in range(k_)))
        total += log_sum_exp - logits[n, labels[n]]
    return total / n_


def softmax_cross_entropy_backward_naive(
    logits: np.ndarray, labels: np.ndarray, dloss: float = 1.0
) -> np.ndarray:
    """:math:`\\partial L/\\partial z_{nk} = (\\mathrm{softmax}(z_n)_k - [k = y_n]) / N`, times
    ``dloss``, element by element."""
    n_, k_ = logits.shape
    dlogits = np.zeros_like(logits)
    for n in range(n_):
        top = max(float(logits[n, k]) for k in range(k_))
        denominator = sum(math.exp(logits[n, k] - top) for k in range(k_))
        for k in range(k_):
            p = math.exp(logits[n, k] - top) / denominator
            dlogits[n, k] = dloss * (p - (1.0 if k == labels[n] else 0.0)) / n_
    return dlogits


def global_lp_pool_naive(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C): the square root of each channel's sum of squares (L2 pooling,
    ``lp_pool2d`` with p = 2 over the whole map)."""
    n_, c_, h_, w_ = x.shape
    out = np.zeros((n_, c_), dtype=x.dtype)
    for n in range(n_):
        for c in range(c_):
            total = 0.0
            for h in range(h_):
                for w in range(w_):
                    total += x[n, c, h, w] * x[n, c, h, w]
            out[n, c] = math.sqrt(total)
    return out


def global_lp_pool_backward_naive(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Each position gets :math:`x_{nchw} / \\ell_{nc}` of its channel's gradient; an all-zero
    channel (norm 0, no derivative) gets 0."""
    norms = global_lp_pool_naive(x)
    n_, c_, h_, w_ = x.shape
    dx = np.zeros(x.shape, dtype=dout.dtype)
    for n in range(n_):
        for c in range(c_):
            if norms[n, c] == 0:
                continue
            for h in range(h_):
                for w in range(w_):
                    dx[n, c, h, w] = dout[n, c] * x[n, c, h, w] / norms[n, c]
    return dx


def global_lse_pool_naive(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C): :math:`m + \\log\\sum_{h,w} e^{x_{nchw} - m}` with :math:`m` the
    channel's maximum (no exponent above 0, so nothing overflows)."""
    n_, c_, h_, w_ = x.shape
    out = np.zeros((n_, c_), dtype=x.dtype)
    for n in range(n_):
        for c in range(c_):
            values = [float(x[n, c, h, w]) for h in range(h_) for w in range(w_)]
            top = max(values)
            out[n, c] = top + math.log(sum(math.exp(value - top) for value in values))
    return out


def global_lse_pool_backward_naive(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Each position gets its softmax weight :math:`e^{x_{nchw} - m} / \\sum_{h,w} e^{x_{nchw}
    - m}` of its channel's gradient, element by element."""
    n_, c_, h_, w_ = x.shape
    dx = np.zeros(x.shape, dtype=dout.dtype)
    for n in range(n_):
        for c in range(c_):
            top = max(float(x[n, c, h, w]) for h in range(h_) for w in range(w_))
            denominator = sum(math.exp(x[n, c, h, w] - top) for h in range(h_) for w in range(w_))
            for h in range(h_):
                for w in range(w_):
                    dx[n, c, h, w] = dout[n, c] * math.exp(x[n, c, h, w] - top) / denominator
    return dx


def conv1d_channels_naive(v: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """ECA's 1-D convolution across channels: :math:`y_{nc} = \\sum_j w_j v_{n, c + j - p}`
    with :math:`p = (k - 1)/2`, a term for each tap whose channel exists (zero padding)."""
    n_, c_ = v.shape
    k_ = weight.shape[0]
    p = (k_ - 1) // 2
    out = np.zeros((n_, c_), dtype=v.dtype)
    for n in range(n_):
        for c in range(c_):
            total = 0.0
            for j in range(k_):
                if 0 <= c + j - p < c_:  # outside: a padding zero
                    total += weight[j] * v[n, c + j - p]
            out[n, c] = total
    return out


def conv1d_channels_backward_naive(dout: np.ndarray, v: np.ndarray, weight: np.ndarray):
    """Every term :math:`w_j v_{n, c + j - p}` of the forward sum sends its share back: to
    :math:`\\bar v` (neighbouring channels share inputs, hence ``+=``) and to :math:`\\bar w`."""
    n_, c_ = v.shape
    k_ = weight.shape[0]
    p = (k_ - 1) // 2
    dv = np.zeros_like(v)
    dweight = np.zeros_like(weight)
    for n in range(n_):
        for c in range(c_):
            for j in range(k_):
                if 0 <= c + j - p < c_:
                    dv[n, c + j - p] += dout[n, c] * weight[j]
                    dweight[j] += dout[n, c] * v[n, c + j - p]
    return dv, dweight
