r"""2-D convolution (cross-correlation, as in PyTorch) through im2col.

Forward: unfold the input into patches, then one matrix product with the flattened kernels.
Backward: the same product read backwards: the weight gradient multiplies the upstream gradient
by the patches, the patch gradient multiplies it by the kernels, and col2im folds the patch
gradient back into the input's shape.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import quiet_floats, require_conv_operands, require_finite_result, require_shape
from npcbam.ops.im2col import as_pair, col2im, conv_output_size, im2col


class Conv2dCache(NamedTuple):
    # the input, not its kh*kw times larger unfolding: backward unfolds it again
    x: np.ndarray  # (N, C, H, W)
    weight: np.ndarray  # (F, C, kh, kw)
    stride: tuple[int, int]
    padding: tuple[int, int]
    has_bias: bool
    dilation: tuple[int, int] = (1, 1)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b``; with an inner dimension of 1 (one output channel, as in CBAM's spatial
    conv) the product is an outer product, which broadcasting computes ~10x faster than BLAS."""
    return a * b if a.shape[1] == 1 else a @ b


@quiet_floats
def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride=1,
    padding=0,
    dilation=1,
) -> tuple[np.ndarray, Conv2dCache]:
    r"""Convolve (cross-correlate) a batch of images with F kernels.

    .. math:: y_{n f i j} = b_f + \sum_{c, u, v} W_{f c u v}\,
              x^{\text{pad}}_{n,\,c,\,s_h i + d_h u,\,s_w j + d_w v}
              \qquad\Longleftrightarrow\qquad
              Y = W_{\text{mat}}\, \mathrm{cols}(x) + b

    with :math:`W_{\text{mat}}` the (F, C·kh·kw) kernels and :math:`Y` the (F, N·Ho·Wo) output.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    weight : ndarray, shape (F, C, kh, kw)
    bias : ndarray, shape (F,), optional
    stride : int or (sh, sw), >= 1
    padding : int or (ph, pw), >= 0, zeros on each side
    dilation : int or (dh, dw), >= 1
        Spacing of the kernel's taps: a dilated k×k kernel covers :math:`d(k-1)+1` pixels
        per axis with k² weights (1: the ordinary convolution).

    Returns
    -------
    out : ndarray, shape (N, F, Ho, Wo)
        with :math:`H_o = \lfloor (H + 2p_h - d_h(k_h - 1) - 1)/s_h \rfloor + 1` (likewise
        :math:`W_o`), :math:`\lfloor (H + 2p_h - k_h)/s_h \rfloor + 1` when not dilated
    cache : Conv2dCache

    Checks: ``x``, ``weight`` (and ``bias``) float32 or float64 with the shapes above (no empty
    axis, the same C, one bias per filter), else ``TypeError`` / ``ValueError`` naming the
    argument; a NaN or inf that reaches the output, or an output that overflows, raises
    ``ValueError`` (one pass over the output, small beside the product's C·kh·kw per entry).
    """
    x, weight, bias = require_conv_operands(x, weight, bias, 1, "conv2d", "(F, C, kh, kw)")
    stride, padding = as_pair(stride, "stride", 1), as_pair(padding, "padding", 0)
    dilation = as_pair(dilation, "dilation", 1)
    n, _, h, w = x.shape
    f, c, kh, kw = weight.shape
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    cols = im2col(x, (kh, kw), stride, padding, dilation)  # (C*kh*kw, N*Ho*Wo)
    weight_mat = weight.reshape(f, c * kh * kw)  # (F, C, kh, kw) -> (F, C*kh*kw)
    out_mat = weight_mat @ cols  # (F, N*Ho*Wo)
    if bias is not None:
        out_mat += bias[:, None]
    # (F, N*Ho*Wo) -> (F, N, Ho, Wo) -> (N, F, Ho, Wo)
    out = np.ascontiguousarray(out_mat.reshape(f, n, ho, wo).transpose(1, 0, 2, 3))
    require_finite_result("conv2d_forward", out, {"x": x, "weight": weight, "bias": bias})
    return out, Conv2dCache(x, weight, stride, padding, bias is not None, dilation)


@quiet_floats
def conv2d_backward(
    dout: np.ndarray, cache: Conv2dCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    r"""Gradients of :func:`conv2d_forward`.

    .. math::

        \frac{\partial L}{\partial W_{\text{mat}}} = G\, \mathrm{cols}(x)^\top, \qquad
        \frac{\partial L}{\partial \mathrm{cols}} = W_{\text{mat}}^\top G, \qquad
        \frac{\partial L}{\partial x} = \mathrm{col2im}\Big(\frac{\partial L}
            {\partial \mathrm{cols}}\Big), \qquad
        \frac{\partial L}{\partial b_f} = \sum_{n,i,j} G_{f, (n i j)}

    where :math:`G` is the upstream gradient as an (F, N·Ho·Wo) matrix. A dilation changes
    only which pixels the columns hold: col2im adds each back where im2col read it.

    Parameters
    ----------
    dout : ndarray, shape (N, F, Ho, Wo)
    cache : Conv2dCache

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dweight : ndarray, shape (F, C, kh, kw)
    dbias : ndarray, shape (F,), or None when the forward had no bias

    Checks: ``dout`` has the output's shape; the gradients are checked finite (a NaN or inf in
    ``dout``, found in the small ``dweight``, or an overflow raises ``ValueError``).
    """
    f, c, kh, kw = cache.weight.shape
    n, _, h, w = cache.x.shape
    ho = conv_output_size(h, kh, cache.stride[0], cache.padding[0], cache.dilation[0])
    wo = conv_output_size(w, kw, cache.stride[1], cache.padding[1], cache.dilation[1])
    require_shape(dout, (n, f, ho, wo), "dout", "the output's shape")
    dout_mat = dout.transpose(1, 0, 2, 3).reshape(f, -1)  # (N, F, Ho, Wo) -> (F, N*Ho*Wo)
    weight_mat = cache.weight.reshape(f, c * kh * kw)  # (F, C, kh, kw) -> (F, C*kh*kw)
    cols = im2col(cache.x, (kh, kw), cache.stride, cache.padding, cache.dilation)
    # cols: (C*kh*kw, N*Ho*Wo)
    dweight_mat = dout_mat @ cols.T  # (F, N*Ho*Wo) @ (N*Ho*Wo, C*kh*kw) -> (F, C*kh*kw)
    dweight = dweight_mat.reshape(cache.weight.shape)  # (F, C*kh*kw) -> (F, C, kh, kw)
    del cols  # free it before dcols, as large, is made: a lower peak of memory
    dcols = matmul(weight_mat.T, dout_mat)  # (C*kh*kw, F) @ (F, N*Ho*Wo) -> (C*kh*kw, N*Ho*Wo)
    dx = col2im(dcols, cache.x.shape, (kh, kw), cache.stride, cache.padding, cache.dilation)
    dbias = dout_mat.sum(axis=1) if cache.has_bias else None
    inputs = {"dout": dout, "x": cache.x, "weight": cache.weight}
    require_finite_result("conv2d_backward", dweight, inputs)  # dout's NaN or inf show here
    require_finite_result("conv2d_backward", dx, inputs)
    return dx, dweight, dbias
