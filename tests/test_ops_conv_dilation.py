"""Dilated convolution: im2col, col2im and conv2d with dilation > 1 (together with strides > 1,
padding 0, non-square inputs and kernels) against the loop oracles and finite differences;
col2im as the adjoint of im2col; the output size; ``Conv2d(dilation=...)``; and a col2im that
ignores the dilation, which the checks must catch."""

import numpy as np
import pytest
from helpers import EXACT, assert_gradients_match, seeds
from hypothesis import example, given
from hypothesis import strategies as st
from test_ops_conv import ConvCase  # one case type, dilation included

import npcbam
from npcbam import check_op_gradients
from npcbam.ops import col2im, conv2d_backward, conv2d_forward, im2col
from npcbam.ops.im2col import conv_output_size
from npcbam.ops.reference import conv2d_backward_naive, conv2d_naive
from npcbam.testing import assert_module_gradients


@st.composite
def dilated_cases(draw, max_channels=2, max_extra=3):
    """Kernels 1-3 per axis, strides 1-3, paddings 0-2 (0 half the time), dilations 1-4 per
    axis, and an input just large enough for the padded, dilated kernel plus up to
    ``max_extra`` rows and columns."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (0, 0) if draw(st.booleans()) else (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    h, w = (
        draw(
            st.integers(
                max(1, d * (k - 1) + 1 - 2 * p), max(1, d * (k - 1) + 1 - 2 * p) + max_extra
            )
        )
        for k, p, d in zip(kernel, padding, dilation)
    )
    n, c, f = draw(st.integers(1, 2)), draw(st.integers(1, max_channels)), draw(st.integers(1, 3))
    return ConvCase(n, c, h, w, f, kernel, stride, padding, dilation)


# dilation > 1 with stride > 1, padding 0, non-square inputs and kernels, in every test below
EDGE_CASES = [
    ConvCase(1, 2, 9, 7, 2, (3, 2), (2, 3), (0, 0), (2, 3)),  # all four at once
    ConvCase(2, 1, 11, 6, 3, (3, 3), (2, 2), (0, 0), (4, 1)),  # d = 4 in one axis only
    ConvCase(1, 2, 5, 13, 1, (2, 3), (3, 2), (0, 0), (4, 4)),  # span equals H exactly
    ConvCase(2, 2, 6, 7, 2, (3, 3), (1, 1), (4, 4), (4, 4)),  # BAM's 3×3, d = p = 4
    ConvCase(1, 1, 8, 5, 2, (3, 1), (1, 2), (1, 0), (2, 3)),  # overlapping taps (s < d k)
]


def with_edge_cases(test):
    for case in EDGE_CASES:
        test = example(case=case, seed=0)(test)
    return test


def draw_conv(rng, case, with_bias=True):
    x = rng.standard_normal(case.x_shape)
    weight = rng.standard_normal(case.weight_shape)
    bias = rng.standard_normal(case.f) if with_bias else None
    return x, weight, bias


def conv_gradcheck(case, x, weight, bias, backward=conv2d_backward, title="dilated conv2d"):
    """Gradient check of the dilated conv2d w.r.t. x, weight and bias."""
    _, stride, padding, dilation = case.args()

    def forward(x, weight, bias):
        return conv2d_forward(x, weight, bias, stride, padding, dilation)

    inputs = {"x": x, "weight": weight, "bias": bias}
    return check_op_gradients(forward, backward, inputs, title=title)


def test_edge_cases_combine_dilation_stride_padding_0_and_non_square_shapes():
    """The hand-picked cases do what their comment says (checked, so that an edit cannot
    quietly drop the combination the issue asks for)."""
    first = EDGE_CASES[0]
    assert min(first.dilation) > 1 and min(first.stride) > 1 and first.padding == (0, 0)
    assert first.h != first.w and first.kernel[0] != first.kernel[1]
    assert all(max(case.dilation) > 1 for case in EDGE_CASES)


@given(case=dilated_cases(), seed=seeds)
@with_edge_cases
def test_dilated_conv2d_matches_loop_oracle(case, seed):
    """Forward and backward through im2col/col2im equal the direct loops of the definition,
    y[n, f, i, j] = b[f] + sum W[f, c, u, v] x_pad[n, c, s_h i + d_h u, s_w j + d_w v]."""
    rng = np.random.default_rng(seed)
    x, weight, bias = draw_conv(rng, case)
    _, stride, padding, dilation = case.args()
    out, cache = conv2d_forward(x, weight, bias, stride, padding, dilation)
    assert out.shape == (case.n, case.f, *case.out_hw)
    np.testing.assert_allclose(
        out, conv2d_naive(x, weight, bias, stride, padding, dilation), **EXACT
    )
    dout = rng.standard_normal(out.shape)
    dx, dweight, dbias = conv2d_backward(dout, cache)
    expected = conv2d_backward_naive(
        dout, x, weight, stride, padding, with_bias=True, dilation=dilation
    )
    for ours, theirs in zip((dx, dweight, dbias), expected):
        np.testing.assert_allclose(ours, theirs, **EXACT)


@given(case=dilated_cases(), seed=seeds)
@with_edge_cases
def test_dilated_conv2d_gradient_matches_finite_differences(case, seed):
    x, weight, bias = draw_conv(np.random.default_rng(seed), case)
    assert_gradients_match(conv_gradcheck(case, x, weight, bias))


@given(case=dilated_cases(max_channels=3), seed=seeds)
@with_edge_cases
def test_dilated_im2col_rows_are_the_dilated_receptive_fields(case, seed):
    """Row (c, u, v), column (n, i, j) of im2col is x_pad[n, c, sh*i + dh*u, sw*j + dw*v]."""
    x = np.random.default_rng(seed).standard_normal(case.x_shape)
    cols = im2col(x, *case.args())
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = case.args()
    ho, wo = case.out_hw
    padded = np.zeros((case.n, case.c, case.h + 2 * ph, case.w + 2 * pw))
    padded[:, :, ph : ph + case.h, pw : pw + case.w] = x
    assert cols.shape == (case.c * kh * kw, case.n * ho * wo)
    for column, (n, i, j) in enumerate(np.ndindex(case.n, ho, wo)):
        rows = sh * i + dh * np.arange(kh)
        columns = sw * j + dw * np.arange(kw)
        field = padded[n][:, rows][:, :, columns]  # (C, kh, kw)
        np.testing.assert_array_equal(cols[:, column], field.ravel())


@given(case=dilated_cases(max_channels=3), seed=seeds)
@with_edge_cases
def test_dilated_col2im_is_adjoint_of_im2col(case, seed):
    """<im2col(x), c> == <x, col2im(c)>: the dilated col2im is the dilated im2col's
    transpose, which is what the input gradient needs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.x_shape)
    cols_x = im2col(x, *case.args())
    c = rng.standard_normal(cols_x.shape)
    folded = col2im(c, case.x_shape, *case.args())
    assert folded.shape == case.x_shape and folded.flags.c_contiguous
    np.testing.assert_allclose(np.vdot(cols_x, c), np.vdot(x, folded), **EXACT)


def test_dilation_1_is_the_default_everywhere():
    """Passing dilation 1 explicitly changes nothing (bit for bit)."""
    case = ConvCase(2, 2, 6, 5, 3, (3, 2), (2, 1), (1, 0), (1, 1))
    rng = np.random.default_rng(3)
    x, weight, bias = draw_conv(rng, case)
    kernel, stride, padding, _ = case.args()
    cols = im2col(x, kernel, stride, padding)
    np.testing.assert_array_equal(cols, im2col(x, *case.args()))
    np.testing.assert_array_equal(
        col2im(cols, case.x_shape, kernel, stride, padding),
        col2im(cols, case.x_shape, *case.args()),
    )
    out, _ = conv2d_forward(x, weight, bias, stride, padding)
    np.testing.assert_array_equal(out, conv2d_forward(x, weight, bias, stride, padding, 1)[0])


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "dilation", "expected"),
    [
        (7, 3, 1, 0, 2, 3),  # span 5
        (7, 3, 2, 0, 3, 1),  # span 7 = L
        (56, 3, 1, 4, 4, 56),  # BAM: padding = dilation = 4 keeps the size
        (10, 2, 3, 0, 4, 2),  # span 5: (10 - 5) // 3 + 1
        (5, 1, 2, 0, 9, 3),  # a 1-tap kernel is never dilated
    ],
)
def test_output_size_with_dilation(size, kernel, stride, padding, dilation, expected):
    assert conv_output_size(size, kernel, stride, padding, dilation) == expected


def test_dilated_kernel_that_does_not_fit_names_its_span():
    """A 3×3 kernel dilated by 4 spans 9 pixels: it fits H = 9 but not W = 8 (padding 0)."""
    x, weight = np.zeros((1, 1, 9, 8)), np.zeros((1, 1, 3, 3))
    assert conv2d_forward(x[:, :, :, :9], weight[:, :, :, :1], dilation=4)[0].shape == (1, 1, 1, 8)
    message = (
        r"kernel of size 3 dilated by 4 to a span of 9 does not fit an input of size 8 padded "
        r"by 0 on each side \(padded size 8\)"
    )
    with pytest.raises(ValueError, match=message):
        conv2d_forward(x, weight, dilation=4)
    with pytest.raises(ValueError, match=r"dilation must be >= 1, got 0"):
        conv2d_forward(x, weight, dilation=0)


# -- the layer --------------------------------------------------------------------------------
@given(case=dilated_cases(), seed=seeds)
@with_edge_cases
def test_conv2d_layer_with_dilation(case, seed):
    """``Conv2d(..., dilation=d)``: the op's output, the same state dict as without the
    dilation, and gradients that match finite differences."""
    kernel, stride, padding, dilation = case.args()
    layer = npcbam.Conv2d(case.c, case.f, kernel, stride, padding, dilation, seed=seed)
    plain = npcbam.Conv2d(case.c, case.f, kernel, stride, padding, seed=seed)
    assert layer.dilation == dilation
    assert {k: v.shape for k, v in layer.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }
    x = np.random.default_rng((seed, 1)).standard_normal(case.x_shape)
    p = layer.parameters()
    expected = conv2d_naive(x, p["weight"], p["bias"], stride, padding, dilation)
    np.testing.assert_allclose(layer.forward(x), expected, **EXACT)
    assert_module_gradients(layer, x, seed=seed)


def test_conv2d_layer_refuses_a_bad_dilation():
    with pytest.raises(ValueError, match=r"dilation must be >= 1, got 0"):
        npcbam.Conv2d(2, 2, 3, dilation=0)
    with pytest.raises(TypeError, match=r"dilation must be an integer, got 2.0"):
        npcbam.Conv2d(2, 2, 3, dilation=2.0)
    with pytest.raises(ValueError, match=r"dilation must be an int or a pair of ints"):
        npcbam.Conv2d(2, 2, 3, dilation=(1, 2, 3))


# -- a planted bug: the dilation ignored in col2im --------------------------------------------
def col2im_ignoring_dilation(cols, x_shape, kernel, stride, padding, dilation):
    """A wrong col2im: the output size is the dilated one, but tap (u, v) is added back at
    offset (u, v) of its window instead of (d_h u, d_w v), as if the kernel were not
    dilated."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x_shape
    ho, wo = (conv_output_size(*args) for args in zip((h, w), kernel, stride, padding, dilation))
    patches = cols.reshape(c, kh, kw, n, ho, wo)  # (C*kh*kw, N*Ho*Wo) -> (C, kh, kw, N, Ho, Wo)
    padded = np.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for u in range(kh):
        for v in range(kw):
            padded[:, :, u : u + sh * ho : sh, v : v + sw * wo : sw] += patches[:, u, v]
    return np.ascontiguousarray(padded[:, :, ph : ph + h, pw : pw + w].transpose(1, 0, 2, 3))


def backward_col2im_ignoring_dilation(dout, cache):
    """conv2d_backward with the input gradient folded back by :func:`col2im_ignoring_dilation`."""
    _, dweight, dbias = conv2d_backward(dout, cache)
    f = cache.weight.shape[0]
    dout_mat = dout.transpose(1, 0, 2, 3).reshape(f, -1)  # (N, F, Ho, Wo) -> (F, N*Ho*Wo)
    dcols = cache.weight.reshape(f, -1).T @ dout_mat  # (C*kh*kw, N*Ho*Wo)
    kernel = cache.weight.shape[2:]
    dx = col2im_ignoring_dilation(
        dcols, cache.x.shape, kernel, cache.stride, cache.padding, cache.dilation
    )
    return dx, dweight, dbias


@pytest.mark.parametrize("case", EDGE_CASES, ids=[str(c.dilation) for c in EDGE_CASES])
def test_gradcheck_catches_col2im_ignoring_the_dilation(case):
    """The mutant fails the gradient check in the input's row only (the weight gradient does
    not use col2im), and breaks the adjoint identity, where the correct col2im passes both."""
    x, weight, bias = draw_conv(np.random.default_rng(1), case)
    assert_gradients_match(conv_gradcheck(case, x, weight, bias))
    report = conv_gradcheck(case, x, weight, bias, backward=backward_col2im_ignoring_dilation)
    assert [row.name for row in report.rows if not row.passed] == ["x"], str(report)
    rng = np.random.default_rng(2)
    cols_x = im2col(x, *case.args())
    c = rng.standard_normal(cols_x.shape)
    folded = col2im_ignoring_dilation(c, case.x_shape, *case.args())
    assert not np.isclose(np.vdot(cols_x, c), np.vdot(x, folded), rtol=1e-6)


def test_col2im_ignoring_dilation_is_right_without_dilation():
    """Control: with d = 1 the mutant is col2im itself, so its failure above is the
    dilation's."""
    case = EDGE_CASES[0]._replace(dilation=(1, 1))
    x, weight, bias = draw_conv(np.random.default_rng(1), case)
    report = conv_gradcheck(case, x, weight, bias, backward=backward_col2im_ignoring_dilation)
    assert_gradients_match(report)
