r"""Convolution layers: ``Conv2d`` and ``ConvTranspose2d`` with PyTorch's names, shapes and
default initialisation."""

from __future__ import annotations

import numpy as np

from npcbam._checks import require_finite, require_int
from npcbam.nn.init import default_bias, default_weight
from npcbam.nn.module import Module, check_feature_map
from npcbam.ops.conv import conv2d_backward, conv2d_forward
from npcbam.ops.conv_transpose import conv_transpose2d_backward, conv_transpose2d_forward
from npcbam.ops.im2col import as_pair


class _ConvBase(Module):
    """What both convolutions share: a weight, an optional bias, their gradients, and the
    layer around the op pair each subclass names in ``_op_forward`` / ``_op_backward``."""

    checks_dy_first = True  # see Module.checks_dy_first

    def __init__(
        self, in_channels, out_channels, kernel_size, stride, padding, bias: bool, seed
    ) -> None:
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = as_pair(stride, "stride", 1)
        self.padding = as_pair(padding, "padding", 0)
        self.in_channels = require_int(in_channels, "in_channels", 1)
        self.out_channels = require_int(out_channels, "out_channels", 1)
        # Conv2d: (out, in, kh, kw); ConvTranspose2d: (in, out, kh, kw), PyTorch's layouts
        weight_shape = self._weight_shape(self.in_channels, self.out_channels)
        rng = np.random.default_rng(seed)
        # PyTorch draws the weight first, then the bias with the same 1/sqrt(fan_in) bound,
        # fan_in being the product of the weight's dimensions after the first
        self.register_parameter("weight", default_weight(weight_shape, rng))
        if bias:
            fan_in = int(np.prod(weight_shape[1:]))
            self.register_parameter("bias", default_bias(self.out_channels, fan_in, rng))
        self.has_bias = bool(bias)

    def check_input(self, x) -> np.ndarray:
        return check_feature_map(x, self.in_channels)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        # a NaN or inf in x is found by the op, in its output (which it reaches)
        bias = self.param_as("bias", x.dtype) if self.has_bias else None
        out, self._cache = self._op_forward(x, self.param_as("weight", x.dtype), bias)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        require_finite(dout, "dy")
        dx, dweight, dbias = self._op_backward(dout, self._cache)
        self.accumulate_grad("weight", dweight)
        if self.has_bias:
            self.accumulate_grad("bias", dbias)
        return dx


class Conv2d(_ConvBase):
    r"""2-D convolution layer (cross-correlation), ``torch.nn.Conv2d`` with groups = 1.

    .. math:: y_{n f i j} = b_f + \sum_{c,u,v} W_{f c u v}\, x^{\text{pad}}_{n,\,c,\,
              s_h i + d_h u,\, s_w j + d_w v}

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (kh, kw)
    stride : int or (sh, sw)
    padding : int or (ph, pw), zeros on each side
    dilation : int or (dh, dw)
        Spacing of the kernel's taps (1, the default: adjacent pixels), as ``torch.nn.Conv2d``'s
        ``dilation``; BAM's spatial branch uses 3×3 kernels dilated by 4, padding 4.
    bias : bool
    seed : int, numpy Generator or None
        Source of PyTorch's default initialisation :math:`\mathcal U(\pm 1/\sqrt{C k_h k_w})`.

    Notes
    -----
    State dict: ``weight`` (out, in, kh, kw), ``bias`` (out,). Input (N, in, H, W), output
    (N, out, Ho, Wo) with :math:`H_o = \lfloor (H + 2p_h - d_h(k_h - 1) - 1)/s_h \rfloor + 1`.
    The dilation changes no parameter shape (the state dict is the same). Forward and
    backward: :func:`npcbam.ops.conv.conv2d_forward`, :func:`~npcbam.ops.conv.conv2d_backward`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size=3,
        stride=1,
        padding=0,
        dilation=1,
        bias: bool = True,
        seed=None,
    ) -> None:
        self.dilation = as_pair(dilation, "dilation", 1)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias, seed)

    def _weight_shape(self, in_channels: int, out_channels: int) -> tuple[int, ...]:
        return (out_channels, in_channels, *self.kernel_size)

    def _op_forward(self, x, weight, bias):
        return conv2d_forward(x, weight, bias, self.stride, self.padding, self.dilation)

    def _op_backward(self, dout, cache):
        return conv2d_backward(dout, cache)


class ConvTranspose2d(_ConvBase):
    r"""2-D transposed convolution layer, ``torch.nn.ConvTranspose2d`` with groups = 1.

    .. math:: y^{\text{pad}}_{n,\,f,\,s_h i + u,\,s_w j + v} \mathrel{+}= \sum_c x_{n c i j}\,
              W_{c f u v}, \qquad y = \mathrm{crop}_p(y^{\text{pad}}) + b

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (kh, kw)
    stride : int or (sh, sw)
    padding : int or (ph, pw), cropped from each side of the output
    output_padding : int or (oh, ow), smaller than the stride: extra rows/columns at the end
    bias : bool
    seed : int, numpy Generator or None
        Source of PyTorch's default initialisation :math:`\mathcal U(\pm 1/\sqrt{C_{out}
        k_h k_w})` (PyTorch computes fan_in from the weight's second dimension).

    Notes
    -----
    State dict: ``weight`` (in, out, kh, kw) (PyTorch's layout for transposed convolutions),
    ``bias`` (out,). Output size :math:`H_o = (H - 1)s_h - 2p_h + k_h + o_h`. Forward and
    backward: :mod:`npcbam.ops.conv_transpose`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size=3,
        stride=1,
        padding=0,
        output_padding=0,
        bias: bool = True,
        seed=None,
    ) -> None:
        self.output_padding = as_pair(output_padding, "output_padding", 0)
        stride_pair = as_pair(stride, "stride", 1)
        if any(o >= s for o, s in zip(self.output_padding, stride_pair)):
            raise ValueError(
                f"output_padding={self.output_padding} must be smaller than stride={stride_pair} "
                "along each axis"
            )
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias, seed)

    def _weight_shape(self, in_channels: int, out_channels: int) -> tuple[int, ...]:
        return (in_channels, out_channels, *self.kernel_size)

    def _op_forward(self, x, weight, bias):
        return conv_transpose2d_forward(
            x, weight, bias, self.stride, self.padding, self.output_padding
        )

    def _op_backward(self, dout, cache):
        return conv_transpose2d_backward(dout, cache)
