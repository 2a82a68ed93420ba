r"""im2col and col2im: a convolution becomes one matrix product.

``im2col`` copies every receptive field (a C×kh×kw patch of the zero-padded input) into a
column of a matrix; ``col2im`` is its adjoint: it adds each column back onto the patch it came
from. Where windows overlap (stride < kernel) a pixel receives the sum of several columns, hence
``+=``.

A *dilated* kernel (dilation d > 1, as in BAM's spatial branch) reads every d-th pixel of a
window spanning :math:`d(k - 1) + 1` pixels: tap u of the kernel sits at offset :math:`d u`.
Both functions take the dilation; with the default d = 1 they are the plain convolution's.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from npcbam._checks import require_int


def as_pair(value, name: str, minimum: int) -> tuple[int, int]:
    """Return ``(value, value)`` for an int, or the checked pair for a 2-sequence."""
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return tuple(require_int(v, name, minimum) for v in pair)


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    r"""Output length of a convolution along one axis:
    :math:`\lfloor (L + 2p - d(k - 1) - 1) / s \rfloor + 1`, or a ``ValueError`` if the
    (dilated) kernel does not fit. With d = 1 this is :math:`\lfloor (L + 2p - k)/s \rfloor + 1`.
    """
    padded = size + 2 * padding
    span = dilation * (kernel - 1) + 1  # the pixels a dilated kernel reaches across
    if padded < span:
        dilated = f" dilated by {dilation} to a span of {span}" if dilation > 1 else ""
        raise ValueError(
            f"kernel of size {kernel}{dilated} does not fit an input of size {size} padded by "
            f"{padding} on each side (padded size {padded})"
        )
    return (padded - span) // stride + 1


def im2col(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    r"""Unfold every receptive field of the zero-padded input into a column.

    .. math:: \mathrm{cols}[(c, u, v),\, (n, i, j)] = x^{\text{pad}}_{n,\,c,\,s_h i + d_h u,\,
              s_w j + d_w v}

    One column per output pixel, one row per kernel tap (c, u, v). This layout (Caffe's, with
    the batch added) keeps each row's copy and each col2im addition a run of contiguous
    memory along the image width.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel : (kh, kw)
    stride : (sh, sw)
    padding : (ph, pw), zeros added on each side
    dilation : (dh, dw), the spacing of the kernel's taps (1: adjacent pixels)

    Returns
    -------
    cols : ndarray, shape (C * kh * kw, N * Ho * Wo), rows ordered (c, u, v), columns (n, i, j)
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    n, c, h, w = x.shape
    ho = conv_output_size(h, kh, sh, ph, dh)
    wo = conv_output_size(w, kw, sw, pw, dw)
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # kh, kw when not dilated
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # (N, C, H+2ph, W+2pw)
    # A view, no copy: (N, C, H+2ph-span_h+1, W+2pw-span_w+1, span_h, span_w) ...
    windows = sliding_window_view(padded, (span_h, span_w), axis=(2, 3))
    # ... of which every stride-th window and every dilation-th tap of it is kept (still a
    # view; with d = 1 the tap slice keeps everything): (N, C, Ho, Wo, kh, kw)
    windows = windows[:, :, : sh * ho : sh, : sw * wo : sw, ::dh, ::dw]
    # (N, C, Ho, Wo, kh, kw) -> (C, kh, kw, N, Ho, Wo) -> (C*kh*kw, N*Ho*Wo): the one copy
    return windows.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * ho * wo)


def col2im(
    cols: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    r"""Adjoint of :func:`im2col`: add every column back onto its receptive field.

    .. math:: x_{n,c,y,z} \mathrel{+}= \mathrm{cols}[(c, u, v),\, (n, i, j)]
              \quad\text{for all } s_h i + d_h u - p_h = y,\; s_w j + d_w v - p_w = z

    Loops over the kh·kw kernel offsets (49 for a 7×7 kernel), each adding one strided slice:
    vectorized over C, N, Ho, Wo, and several times faster here than scattering every
    element with NumPy's unbuffered indexed add (``add.at``). Tap (u, v) of a dilated kernel
    starts at row :math:`d_h u`, column :math:`d_w v` of the padded input.

    Parameters
    ----------
    cols : ndarray, shape (C * kh * kw, N * Ho * Wo)
    x_shape : (N, C, H, W), the shape of the input of :func:`im2col`
    kernel, stride, padding, dilation : as for :func:`im2col`

    Returns
    -------
    x : ndarray, shape (N, C, H, W), C-contiguous
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    n, c, h, w = x_shape
    ho = conv_output_size(h, kh, sh, ph, dh)
    wo = conv_output_size(w, kw, sw, pw, dw)
    patches = cols.reshape(c, kh, kw, n, ho, wo)  # (C*kh*kw, N*Ho*Wo) -> (C, kh, kw, N, Ho, Wo)
    # accumulate channel-major, like the patches, so that both sides of += run contiguously
    padded = np.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)  # (C, N, Hp, Wp)
    for u in range(kh):
        for v in range(kw):
            top, left = dh * u, dw * v  # where tap (u, v) sits in the window: u, v if d = 1
            # kernel offset (u, v) touches rows top, top+sh, ..., columns left, left+sw, ...:
            # overlapping windows add up here, so this must be +=, never =
            padded[:, :, top : top + sh * ho : sh, left : left + sw * wo : sw] += patches[:, u, v]
    # crop the padding; (C, N, H, W) -> (N, C, H, W)
    return np.ascontiguousarray(padded[:, :, ph : ph + h, pw : pw + w].transpose(1, 0, 2, 3))
