"""conv_transpose2d: finite-difference gradients, agreement with the scatter loop oracle, the
adjoint identity with conv2d, output sizes (the FPN's up-sampling configurations included),
errors and dtype preservation."""

from typing import NamedTuple

import numpy as np
import pytest
from helpers import EXACT, assert_gradients_match, seeds
from hypothesis import example, given
from hypothesis import strategies as st

from npcbam import check_op_gradients
from npcbam.ops import conv2d_forward
from npcbam.ops.conv_transpose import (
    conv_transpose2d_backward,
    conv_transpose2d_forward,
    conv_transpose_output_size,
)
from npcbam.ops.reference import conv_transpose2d_backward_naive, conv_transpose2d_naive


class ConvTCase(NamedTuple):
    """Shapes and hyper-parameters of one transposed convolution."""

    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    output_padding: tuple[int, int]

    @property
    def x_shape(self):
        return (self.n, self.c_in, self.h, self.w)

    @property
    def weight_shape(self):
        return (self.c_in, self.c_out, *self.kernel)

    @property
    def out_hw(self):
        """(L - 1) s - 2p + k + output_padding along each axis, from the definition."""
        return tuple(
            (size - 1) * s - 2 * p + k + o
            for size, k, s, p, o in zip(
                (self.h, self.w), self.kernel, self.stride, self.padding, self.output_padding
            )
        )


def smallest_input(kernel: int, stride: int, padding: int, output_padding: int) -> int:
    """The smallest input length whose output length (L - 1)s - 2p + k + o is at least 1."""
    deficit = 1 + 2 * padding - kernel - output_padding  # what (L - 1) s must make up
    return 1 + max(0, -(-deficit // stride))


@st.composite
def conv_t_cases(draw, max_channels=2, max_extra=2):
    """Strides 1, 2, 3, 4, 8 per axis, output_padding below the stride, padding 0-2, kernels
    1-5 per axis (so kernels smaller than the stride and rectangular kernels occur), and an
    input just long enough for a non-empty output plus up to ``max_extra``."""
    axes = []  # (size, kernel, stride, padding, output_padding) for the height, then the width
    for _ in range(2):
        k = draw(st.integers(1, 5))
        s = draw(st.sampled_from([1, 2, 3, 4, 8]))
        p = draw(st.integers(0, 2))
        o = draw(st.integers(0, s - 1))
        low = smallest_input(k, s, p, o)
        axes.append((draw(st.integers(low, low + max_extra)), k, s, p, o))
    (h, *height), (w, *width) = axes
    kernel, stride, padding, output_padding = zip(height, width)
    n = draw(st.integers(1, 2))
    c_in = draw(st.integers(1, max_channels))
    c_out = draw(st.integers(1, max_channels + 1))
    return ConvTCase(n, c_in, h, w, c_out, kernel, stride, padding, output_padding)


# Hand-picked cases every property below runs on, whatever hypothesis draws.
EDGE_CASES = [
    ConvTCase(1, 1, 1, 1, 1, (1, 1), (1, 1), (0, 0), (0, 0)),  # all ones: a scalar product
    ConvTCase(1, 2, 3, 4, 3, (3, 3), (1, 1), (1, 1), (0, 0)),  # FPN up1: k3 s1 p1, C_in != C_out
    ConvTCase(2, 2, 2, 3, 1, (3, 3), (2, 2), (1, 1), (1, 1)),  # FPN up2: k3 s2 p1 op1
    ConvTCase(1, 1, 2, 2, 2, (3, 3), (4, 4), (1, 1), (3, 3)),  # FPN up3: k3 s4 p1 op3
    ConvTCase(1, 1, 2, 1, 1, (5, 5), (8, 8), (1, 1), (5, 5)),  # FPN up4: k5 s8 p1 op5, k < s
    ConvTCase(1, 2, 3, 2, 2, (2, 5), (3, 1), (0, 2), (2, 0)),  # rectangular, per-axis settings
    ConvTCase(2, 1, 2, 3, 2, (4, 4), (2, 2), (0, 0), (0, 0)),  # overlapping scatters, no crop
    ConvTCase(1, 1, 5, 1, 1, (1, 1), (1, 1), (2, 0), (0, 0)),  # padding crops a 1x1 kernel
]


def with_edge_cases(test):
    """Add every EDGE_CASES entry as an explicit hypothesis example (seed 0)."""
    for case in EDGE_CASES:
        test = example(case=case, seed=0)(test)
    return test


def draw_conv_t(rng, case, with_bias):
    """x, weight and (optionally) bias for ``case``, standard normal."""
    x = rng.standard_normal(case.x_shape)
    weight = rng.standard_normal(case.weight_shape)
    bias = rng.standard_normal(case.c_out) if with_bias else None
    return x, weight, bias


def conv_t_gradcheck(case, x, weight, bias, backward=conv_transpose2d_backward, seed=0):
    """Gradient check w.r.t. x, weight (and bias), the hyper-parameters bound."""
    settings = (case.stride, case.padding, case.output_padding)
    if bias is not None:

        def forward(x, weight, bias):
            return conv_transpose2d_forward(x, weight, bias, *settings)

        inputs = {"x": x, "weight": weight, "bias": bias}
        grads = backward
    else:

        def forward(x, weight):
            return conv_transpose2d_forward(x, weight, None, *settings)

        def grads(dout, cache):
            dx, dweight, dbias = backward(dout, cache)
            assert dbias is None
            return dx, dweight

        inputs = {"x": x, "weight": weight}
    title = f"conv_transpose2d {case}"
    return check_op_gradients(forward, grads, inputs, title=title, seed=seed)


@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@given(case=conv_t_cases(), seed=seeds)
@with_edge_cases
def test_conv_transpose2d_gradient_matches_finite_differences(with_bias, case, seed):
    """dx, dW (and db) are the derivatives of the transposed convolution, for overlapping
    scatters (k > s), gaps (k < s), cropping, output padding and rectangular kernels."""
    x, weight, bias = draw_conv_t(np.random.default_rng(seed), case, with_bias)
    assert_gradients_match(conv_t_gradcheck(case, x, weight, bias, seed=seed))


@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@given(case=conv_t_cases(), seed=seeds)
@with_edge_cases
def test_conv_transpose2d_matches_loop_oracle(with_bias, case, seed):
    """The vectorized forward (product, then col2im) and backward (im2col, then products)
    equal the scatter loops of the definition; without a bias, dbias is None."""
    rng = np.random.default_rng(seed)
    x, weight, bias = draw_conv_t(rng, case, with_bias)
    settings = (case.stride, case.padding, case.output_padding)
    out, cache = conv_transpose2d_forward(x, weight, bias, *settings)
    assert out.shape == (case.n, case.c_out, *case.out_hw)
    np.testing.assert_allclose(out, conv_transpose2d_naive(x, weight, bias, *settings), **EXACT)
    dout = rng.standard_normal(out.shape)
    dx, dweight, dbias = conv_transpose2d_backward(dout, cache)
    expected = conv_transpose2d_backward_naive(dout, x, weight, *settings, with_bias=with_bias)
    np.testing.assert_allclose(dx, expected[0], **EXACT)
    np.testing.assert_allclose(dweight, expected[1], **EXACT)
    if with_bias:
        np.testing.assert_allclose(dbias, expected[2], **EXACT)
    else:
        assert dbias is None


@given(case=conv_t_cases(max_channels=3), seed=seeds)
@with_edge_cases
def test_conv_transpose2d_is_adjoint_of_conv2d(case, seed):
    """<convT(x; W), z> == <x, conv2d(z; W)> with the *same* weight array: read as a conv2d
    weight, (C_in, C_out, kh, kw) maps C_out channels to C_in, and the transposed convolution
    is exactly the transpose of that linear map (same stride and padding)."""
    rng = np.random.default_rng(seed)
    x, weight, _ = draw_conv_t(rng, case, with_bias=False)
    settings = (case.stride, case.padding, case.output_padding)
    y, _ = conv_transpose2d_forward(x, weight, None, *settings)
    z = rng.standard_normal(y.shape)
    back, _ = conv2d_forward(z, weight, None, case.stride, case.padding)
    assert back.shape == x.shape
    np.testing.assert_allclose(np.vdot(y, z), np.vdot(x, back), **EXACT)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "output_padding"),
    [(3, 1, 1, 0), (3, 2, 1, 1), (3, 4, 1, 3), (5, 8, 1, 5)],
    ids=["up1_k3s1", "up2_k3s2", "up3_k3s4", "up4_k5s8"],
)
@pytest.mark.parametrize("full", [8, 16, 40])
def test_fpn_upsampling_restores_full_resolution(kernel, stride, padding, output_padding, full):
    """The FPN's four up-sampling layers bring an H/s map back to exactly H (and W), for
    H, W divisible by 8; here H != W."""
    h, w = full, full + 8
    assert conv_transpose_output_size(h // stride, kernel, stride, padding, output_padding) == h
    x = np.ones((1, 1, h // stride, w // stride))
    weight = np.ones((1, 1, kernel, kernel))
    out, _ = conv_transpose2d_forward(x, weight, None, stride, padding, output_padding)
    assert out.shape == (1, 1, h, w)


def test_output_padding_rows_receive_scatter_when_padding_crops():
    """With padding p >= output_padding, the extra bottom row is a cropped row given back, so
    it holds scattered values (as in PyTorch), not only the bias: k3 s2 p1 op1 on a 1x1 input
    of ones with a kernel of ones gives a 2x2 block of ones."""
    out, _ = conv_transpose2d_forward(np.ones((1, 1, 1, 1)), np.ones((1, 1, 3, 3)), None, 2, 1, 1)
    np.testing.assert_array_equal(out, np.ones((1, 1, 2, 2)))
    out, _ = conv_transpose2d_forward(np.ones((1, 1, 1, 1)), np.ones((1, 1, 3, 3)), None, 2, 0, 1)
    expected = np.ones((1, 1, 4, 4))
    expected[..., 3, :] = expected[..., :, 3] = 0.0  # nothing scattered there: bias only (0)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stride": 2, "output_padding": 2}, r"output_padding \(2, 2\) must be smaller"),
        ({"stride": (1, 3), "output_padding": (1, 0)}, r"output_padding \(1, 0\) .* \(1, 3\)"),
        ({"padding": 3}, r"\(2-1\)\*1 - 2\*3 \+ 3 \+ 0 = -2 < 1"),
    ],
    ids=["op_equals_stride", "op_above_stride_on_one_axis", "empty_output"],
)
def test_bad_hyper_parameters_raise(kwargs, message):
    """output_padding >= stride, or an output with no pixels, raise ValueError naming the
    values."""
    with pytest.raises(ValueError, match=message):
        conv_transpose2d_forward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)), **kwargs)


def test_channel_mismatch_raises():
    """x's channels must be the weight's first dimension (C_in of (C_in, C_out, kh, kw))."""
    with pytest.raises(ValueError, match=r"\(1, 3, 2, 2\).*\(2, 3, 3, 3\)"):
        conv_transpose2d_forward(np.zeros((1, 3, 2, 2)), np.zeros((2, 3, 3, 3)))


def test_conv_transpose2d_keeps_float32():
    """float32 in, float32 out: the forward and all three gradients."""
    case = EDGE_CASES[2]
    x, weight, bias = (
        a.astype(np.float32) for a in draw_conv_t(np.random.default_rng(0), case, with_bias=True)
    )
    settings = (case.stride, case.padding, case.output_padding)
    out, cache = conv_transpose2d_forward(x, weight, bias, *settings)
    grads = conv_transpose2d_backward(np.ones_like(out), cache)
    assert out.dtype == np.float32
    assert [g.dtype for g in grads] == [np.float32] * 3
