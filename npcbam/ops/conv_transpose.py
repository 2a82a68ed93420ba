r"""2-D transposed convolution: the adjoint of :func:`~npcbam.ops.conv.conv2d_forward`.

Where a convolution gathers a k×k window of the input into one output pixel, a transposed
convolution scatters each input pixel, weighted by the kernel, onto a k×k window of the output.
In im2col terms the two are mirror images: a convolution is ``im2col`` then a product; a
transposed convolution is a product then ``col2im``. Its backward is therefore a convolution.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import quiet_floats, require_conv_operands, require_finite_result
from npcbam.ops.conv import matmul
from npcbam.ops.im2col import as_pair, col2im, im2col


class ConvTranspose2dCache(NamedTuple):
    x: np.ndarray  # (N, C_in, H, W)
    weight: np.ndarray  # (C_in, C_out, kh, kw), PyTorch's layout
    stride: tuple[int, int]
    padding: tuple[int, int]
    has_bias: bool


def conv_transpose_output_size(
    size: int, kernel: int, stride: int, padding: int, output_padding: int
) -> int:
    r"""Output length along one axis: :math:`(L - 1)s - 2p + k + p_{\text{out}}`, or a
    ``ValueError`` when it would be below 1."""
    out = (size - 1) * stride - 2 * padding + kernel + output_padding
    if out < 1:
        raise ValueError(
            f"transposed convolution output size (L-1)*s - 2p + k + output_padding = "
            f"({size}-1)*{stride} - 2*{padding} + {kernel} + {output_padding} = {out} < 1"
        )
    return out


@quiet_floats
def conv_transpose2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride=1,
    padding=0,
    output_padding=0,
) -> tuple[np.ndarray, ConvTranspose2dCache]:
    r"""Transposed convolution (PyTorch's ``conv_transpose2d``, groups 1, dilation 1).

    .. math:: y^{\text{pad}}_{n,\,f,\,s_h i + u,\,s_w j + v} \mathrel{+}=
              \sum_c x_{n c i j}\, W_{c f u v}, \qquad y = \mathrm{crop}_p(y^{\text{pad}}) + b_f

    In matrix form: :math:`\mathrm{cols} = W_{\text{mat}}^\top X` with :math:`W_{\text{mat}}`
    the (C_in, C_out·kh·kw) kernels and :math:`X` the (C_in, N·H·W) input, then
    :math:`y = \mathrm{col2im}(\mathrm{cols})`: exactly the input-gradient computation of a
    convolution with the same kernel, stride and padding.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
    weight : ndarray, shape (C_in, C_out, kh, kw)
    bias : ndarray, shape (C_out,), optional
    stride : int or (sh, sw), >= 1
    padding : int or (ph, pw), >= 0: rows and columns cropped from each side of the output
    output_padding : int or (oh, ow), each smaller than its stride: extra rows and columns
        kept at the bottom and right (of the padded output, where padding would otherwise crop
        them; with padding 0 they receive only the bias)

    Returns
    -------
    out : ndarray, shape (N, C_out, Ho, Wo) with :math:`H_o = (H-1)s_h - 2p_h + k_h + o_h`
    cache : ConvTranspose2dCache

    Checks: ``x``, ``weight`` (and ``bias``) float32 or float64 with the shapes above (no empty
    axis, the same C_in, one bias per output channel), else ``TypeError`` / ``ValueError``
    naming the argument; a NaN or inf that reaches the output, or an output that overflows,
    raises ``ValueError`` (one pass over the output).
    """
    x, weight, bias = require_conv_operands(
        x, weight, bias, 0, "conv_transpose2d", "(C_in, C_out, kh, kw)"
    )
    stride, padding = as_pair(stride, "stride", 1), as_pair(padding, "padding", 0)
    output_padding = as_pair(output_padding, "output_padding", 0)
    for o, s in zip(output_padding, stride):
        if o >= s:
            raise ValueError(
                f"output_padding {output_padding} must be smaller than the stride {stride} "
                "along each axis"
            )
    n, c_in, h, w = x.shape
    _, c_out, kh, kw = weight.shape
    ho = conv_transpose_output_size(h, kh, stride[0], padding[0], output_padding[0])
    wo = conv_transpose_output_size(w, kw, stride[1], padding[1], output_padding[1])
    x_mat = x.transpose(1, 0, 2, 3).reshape(c_in, n * h * w)  # (N, C_in, H, W) -> (C_in, N*H*W)
    # (C_in, C_out, kh, kw) -> (C_in, C_out*kh*kw)
    weight_mat = weight.reshape(c_in, c_out * kh * kw)
    cols = matmul(weight_mat.T, x_mat)  # (C_out*kh*kw, C_in) @ (C_in, N*H*W)
    out = col2im(cols, (n, c_out, ho, wo), (kh, kw), stride, padding)  # (N, C_out, Ho, Wo)
    if bias is not None:
        out += bias[:, None, None]
    require_finite_result("conv_transpose2d_forward", out, {"x": x, "weight": weight, "bias": bias})
    return out, ConvTranspose2dCache(x, weight, stride, padding, bias is not None)


@quiet_floats
def conv_transpose2d_backward(
    dout: np.ndarray, cache: ConvTranspose2dCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    r"""Gradients of :func:`conv_transpose2d_forward`: the forward read backwards.

    .. math::

        G_{\text{cols}} = \mathrm{im2col}\Big(\frac{\partial L}{\partial y}\Big), \qquad
        \frac{\partial L}{\partial X} = W_{\text{mat}}\, G_{\text{cols}}, \qquad
        \frac{\partial L}{\partial W_{\text{mat}}} = X\, G_{\text{cols}}^\top, \qquad
        \frac{\partial L}{\partial b_f} = \sum_{n,i,j} \frac{\partial L}{\partial y_{n f i j}}

    (im2col is the adjoint of col2im, so dx is a plain convolution of dout with the kernel).

    Parameters
    ----------
    dout : ndarray, shape (N, C_out, Ho, Wo)
    cache : ConvTranspose2dCache

    Returns
    -------
    dx : ndarray, shape (N, C_in, H, W)
    dweight : ndarray, shape (C_in, C_out, kh, kw)
    dbias : ndarray, shape (C_out,), or None when the forward had no bias

    Checks: ``dout`` is 4-D with N and C_out of the output (its size must fit the forward's);
    the gradients are checked finite (a NaN or inf in ``dout``, found in the small
    ``dweight``, or an overflow raises ``ValueError``).
    """
    n, c_in, h, w = cache.x.shape
    _, c_out, kh, kw = cache.weight.shape
    if np.ndim(dout) != 4 or np.shape(dout)[:2] != (n, c_out):
        raise ValueError(
            f"dout has shape {np.shape(dout)}; expected the output's (N, C_out, Ho, Wo) with "
            f"N, C_out = {n}, {c_out}"
        )
    dcols = im2col(dout, (kh, kw), cache.stride, cache.padding)  # (C_out*kh*kw, N*H*W)
    x_mat = cache.x.transpose(1, 0, 2, 3).reshape(c_in, n * h * w)  # (C_in, N*H*W)
    weight_mat = cache.weight.reshape(c_in, c_out * kh * kw)  # (C_in, C_out*kh*kw)
    dweight_mat = x_mat @ dcols.T  # (C_in, N*H*W) @ (N*H*W, C_out*kh*kw) -> (C_in, C_out*kh*kw)
    dweight = dweight_mat.reshape(cache.weight.shape)  # -> (C_in, C_out, kh, kw)
    dx_mat = weight_mat @ dcols  # (C_in, C_out*kh*kw) @ (C_out*kh*kw, N*H*W) -> (C_in, N*H*W)
    # (C_in, N*H*W) -> (C_in, N, H, W) -> (N, C_in, H, W)
    dx = np.ascontiguousarray(dx_mat.reshape(c_in, n, h, w).transpose(1, 0, 2, 3))
    dbias = dout.sum(axis=(0, 2, 3)) if cache.has_bias else None
    inputs = {"dout": dout, "x": cache.x, "weight": cache.weight}
    require_finite_result("conv_transpose2d_backward", dweight, inputs)  # dout's NaN/inf show
    require_finite_result("conv_transpose2d_backward", dx, inputs)
    return dx, dweight, dbias
