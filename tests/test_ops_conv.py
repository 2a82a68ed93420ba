"""im2col, col2im and conv2d: finite-difference gradients, agreement with the loop oracles,
col2im as the adjoint of im2col, output shapes and errors, dtype preservation, and mutation
checks showing that the gradient check catches wrong convolution backwards."""

import re
from typing import NamedTuple

import numpy as np
import pytest
from helpers import EXACT, assert_gradients_match, seeds
from hypothesis import example, given, settings
from hypothesis import strategies as st

from npcbam import check_op_gradients
from npcbam.ops import col2im, conv2d_backward, conv2d_forward, im2col
from npcbam.ops.reference import conv2d_backward_naive, conv2d_naive


class ConvCase(NamedTuple):
    """Shapes and hyper-parameters of one convolution (dilated or not)."""

    n: int
    c: int
    h: int
    w: int
    f: int  # output channels
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)

    @property
    def x_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def weight_shape(self):
        return (self.f, self.c, *self.kernel)

    @property
    def out_hw(self):
        """floor((L + 2p - d(k - 1) - 1) / s) + 1 along each axis (floor((L + 2p - k) / s) + 1
        without dilation), computed here from the definition."""
        sizes = (self.h, self.w)
        return tuple(
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, k, s, p, d in zip(
                sizes, self.kernel, self.stride, self.padding, self.dilation
            )
        )

    def args(self):
        return self.kernel, self.stride, self.padding, self.dilation


@st.composite
def conv_cases(draw, max_channels=2, max_extra=3):
    """Kernels 1, 3, 5, 7 per axis (so kh != kw happens), strides 1-3 (below, equal to and
    above the kernel), paddings 0-3, and an input just large enough for the padded kernel to
    fit, plus up to ``max_extra`` more rows and columns."""
    kernel = (draw(st.sampled_from([1, 3, 5, 7])), draw(st.sampled_from([1, 3, 5, 7])))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    h, w = (
        draw(st.integers(max(1, k - 2 * p), max(1, k - 2 * p) + max_extra))
        for k, p in zip(kernel, padding)
    )
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, max_channels))
    f = draw(st.integers(1, max_channels + 1))
    return ConvCase(n, c, h, w, f, kernel, stride, padding)


# Hand-picked cases every property below runs on, whatever hypothesis draws.
EDGE_CASES = [
    ConvCase(1, 1, 1, 1, 1, (1, 1), (1, 1), (0, 0)),  # all ones: a scalar product
    ConvCase(1, 2, 4, 5, 3, (3, 3), (1, 1), (1, 1)),  # "same" 3×3, overlapping, C != F
    ConvCase(2, 1, 5, 4, 2, (5, 5), (2, 2), (2, 2)),  # 5×5, stride 2 < kernel
    ConvCase(1, 1, 3, 2, 1, (7, 7), (3, 3), (3, 3)),  # 7×7 on a mostly padded input
    ConvCase(1, 2, 7, 8, 1, (7, 7), (1, 1), (0, 0)),  # 7×7, exactly fits the height
    ConvCase(1, 2, 4, 6, 2, (3, 5), (1, 2), (0, 2)),  # rectangular kernel, per-axis stride
    ConvCase(2, 2, 6, 5, 3, (3, 3), (3, 3), (0, 0)),  # stride == kernel: no overlap
    ConvCase(1, 1, 5, 3, 2, (1, 3), (2, 4), (1, 0)),  # stride > kernel: skipped pixels
]


def with_edge_cases(test):
    """Add every EDGE_CASES entry as an explicit hypothesis example (seed 0)."""
    for case in EDGE_CASES:
        test = example(case=case, seed=0)(test)
    return test


def draw_conv(rng, case, with_bias):
    """x, weight and (optionally) bias for ``case``, standard normal."""
    x = rng.standard_normal(case.x_shape)
    weight = rng.standard_normal(case.weight_shape)
    bias = rng.standard_normal(case.f) if with_bias else None
    return x, weight, bias


def conv_gradcheck(case, x, weight, bias, backward=conv2d_backward, title="conv2d", seed=0):
    """Gradient check of conv2d w.r.t. x, weight (and bias), stride and padding bound."""
    inputs = {"x": x, "weight": weight}
    if bias is not None:
        inputs["bias"] = bias

        def forward(x, weight, bias):
            return conv2d_forward(x, weight, bias, case.stride, case.padding)

        def grads(dout, cache):
            return backward(dout, cache)
    else:

        def forward(x, weight):
            return conv2d_forward(x, weight, None, case.stride, case.padding)

        def grads(dout, cache):
            dx, dweight, dbias = backward(dout, cache)
            assert dbias is None
            return dx, dweight

    return check_op_gradients(forward, grads, inputs, title=title, seed=seed)


@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@settings(max_examples=15)  # the costliest check here: 4 convolutions per input element
@given(case=conv_cases(), seed=seeds)
@with_edge_cases
def test_conv2d_gradient_matches_finite_differences(with_bias, case, seed):
    """conv2d_backward's dx, dW (and db) are the derivatives of the convolution, for
    overlapping and non-overlapping windows, padding and rectangular kernels."""
    x, weight, bias = draw_conv(np.random.default_rng(seed), case, with_bias)
    title = f"conv2d ({'bias' if with_bias else 'no bias'})"
    assert_gradients_match(conv_gradcheck(case, x, weight, bias, title=title, seed=seed))


@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@given(case=conv_cases(), seed=seeds)
@with_edge_cases
def test_conv2d_matches_loop_oracle(with_bias, case, seed):
    """Vectorized conv2d forward and backward (through im2col/col2im) equal the direct
    six-fold loops of the definition."""
    rng = np.random.default_rng(seed)
    x, weight, bias = draw_conv(rng, case, with_bias)
    out, cache = conv2d_forward(x, weight, bias, stride=case.stride, padding=case.padding)
    np.testing.assert_allclose(
        out, conv2d_naive(x, weight, bias, case.stride, case.padding), **EXACT
    )
    dout = rng.standard_normal(out.shape)
    grads = conv2d_backward(dout, cache)
    expected = conv2d_backward_naive(
        dout, x, weight, case.stride, case.padding, with_bias=with_bias
    )
    np.testing.assert_allclose(grads[0], expected[0], **EXACT)
    np.testing.assert_allclose(grads[1], expected[1], **EXACT)
    if with_bias:
        np.testing.assert_allclose(grads[2], expected[2], **EXACT)
    else:
        assert grads[2] is None


@given(case=conv_cases(max_channels=3), seed=seeds)
@with_edge_cases
def test_conv2d_output_shape(case, seed):
    """The output is (N, F, floor((H + 2p - kh)/sh) + 1, floor((W + 2p - kw)/sw) + 1)."""
    x, weight, _ = draw_conv(np.random.default_rng(seed), case, with_bias=False)
    out, _ = conv2d_forward(x, weight, stride=case.stride, padding=case.padding)
    assert out.shape == (case.n, case.f, *case.out_hw)


@given(case=conv_cases(max_channels=3), seed=seeds)
@with_edge_cases
def test_col2im_is_adjoint_of_im2col(case, seed):
    """<im2col(x), c> == <x, col2im(c)> for random x and c: col2im is im2col's transpose,
    which is exactly what the input gradient needs (overlaps add up)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.x_shape)
    cols_x = im2col(x, case.kernel, case.stride, case.padding)
    c = rng.standard_normal(cols_x.shape)
    folded = col2im(c, case.x_shape, case.kernel, case.stride, case.padding)
    assert folded.shape == case.x_shape
    np.testing.assert_allclose(np.vdot(cols_x, c), np.vdot(x, folded), **EXACT)


@given(case=conv_cases(), seed=seeds)
@with_edge_cases
def test_im2col_rows_are_padded_receptive_fields(case, seed):
    """Row (c, u, v), column (n, i, j) of im2col is x_pad[n, c, sh*i + u, sw*j + v]."""
    x = np.random.default_rng(seed).standard_normal(case.x_shape)
    cols = im2col(x, case.kernel, case.stride, case.padding)
    (kh, kw), (sh, sw), (ph, pw) = case.kernel, case.stride, case.padding
    ho, wo = case.out_hw
    padded = np.zeros((case.n, case.c, case.h + 2 * ph, case.w + 2 * pw))
    padded[:, :, ph : ph + case.h, pw : pw + case.w] = x
    assert cols.shape == (case.c * kh * kw, case.n * ho * wo)
    for column, (n, i, j) in enumerate(np.ndindex(case.n, ho, wo)):
        field = padded[n, :, sh * i : sh * i + kh, sw * j : sw * j + kw]
        np.testing.assert_array_equal(cols[:, column], field.ravel())


@pytest.mark.parametrize(
    ("x_shape", "kernel", "padding", "sizes"),
    [
        ((1, 1, 3, 8), (6, 3), (1, 1), ("6", "3", "5")),  # height: 3 + 2*1 = 5 < 6
        ((1, 1, 8, 2), (1, 5), (0, 1), ("5", "2", "4")),  # width: 2 + 2*1 = 4 < 5
    ],
    ids=["height", "width"],
)
def test_kernel_larger_than_padded_input_raises(x_shape, kernel, padding, sizes):
    """A kernel that does not fit the padded input raises ValueError naming the kernel size,
    the input size and the padded size, from conv2d and from im2col alike."""
    x = np.zeros(x_shape)
    weight = np.zeros((1, x_shape[1], *kernel))
    calls = [
        lambda: conv2d_forward(x, weight, padding=padding),
        lambda: im2col(x, kernel, (1, 1), padding),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="kernel") as error:
            call()
        for size in sizes:
            assert re.search(rf"\b{size}\b", str(error.value)), str(error.value)


def test_conv2d_rejects_channel_mismatch():
    """A weight whose input channels differ from x's raises ValueError naming both shapes."""
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\).*\(2, 2, 3, 3\)"):
        conv2d_forward(np.zeros((1, 3, 4, 4)), np.zeros((2, 2, 3, 3)))


def test_conv2d_and_im2col_keep_float32():
    """float32 in, float32 out: forward, all three gradients, im2col and col2im."""
    case = ConvCase(2, 2, 5, 4, 3, (3, 3), (1, 2), (1, 1))
    x, weight, bias = (
        a.astype(np.float32) for a in draw_conv(np.random.default_rng(0), case, with_bias=True)
    )
    out, cache = conv2d_forward(x, weight, bias, stride=case.stride, padding=case.padding)
    grads = conv2d_backward(np.ones_like(out), cache)
    assert out.dtype == np.float32
    assert [g.dtype for g in grads] == [np.float32] * 3
    cols = im2col(x, case.kernel, case.stride, case.padding)
    assert cols.dtype == np.float32
    assert col2im(cols, case.x_shape, case.kernel, case.stride, case.padding).dtype == np.float32


# Mutation checks: deliberately wrong backwards, to show the gradient check can fail.

OVERLAPPING = ConvCase(1, 2, 5, 6, 2, (3, 3), (1, 1), (1, 1))  # k=3, stride 1: windows overlap


def col2im_overwriting(cols, x_shape, kernel, stride, padding):
    """A wrong col2im: each window *overwrites* its patch of the padded input (``=``) instead
    of adding to it (``+=``), so where windows overlap only the last one survives."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x_shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    fields = cols.T.reshape(n, ho, wo, c, kh, kw)  # (C*kh*kw, N*Ho*Wo) -> one field per pixel
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(ho):
        for j in range(wo):
            padded[:, :, sh * i : sh * i + kh, sw * j : sw * j + kw] = fields[:, i, j]
    return padded[:, :, ph : ph + h, pw : pw + w]


def backward_dx_scaled(dout, cache):
    """Mutant (a): the input gradient 1% too large."""
    dx, dweight, dbias = conv2d_backward(dout, cache)
    return 1.01 * dx, dweight, dbias


def backward_dweight_transposed(dout, cache):
    """Mutant (b1): the weight gradient with its square kernel transposed (u, v swapped)."""
    dx, dweight, dbias = conv2d_backward(dout, cache)
    return dx, np.swapaxes(dweight, -1, -2), dbias


def backward_dweight_flipped(dout, cache):
    """Mutant (b2): the weight gradient with its kernel rotated by 180° (convolution instead
    of cross-correlation)."""
    dx, dweight, dbias = conv2d_backward(dout, cache)
    return dx, dweight[..., ::-1, ::-1], dbias


def backward_col2im_overwriting(dout, cache):
    """Mutant (c): the input gradient folded back with ``=`` instead of ``+=``."""
    _, dweight, dbias = conv2d_backward(dout, cache)
    f = cache.weight.shape[0]
    dout_mat = dout.transpose(1, 0, 2, 3).reshape(f, -1)  # (F, N*Ho*Wo)
    dcols = cache.weight.reshape(f, -1).T @ dout_mat  # (C*kh*kw, N*Ho*Wo)
    kernel = cache.weight.shape[2:]
    dx = col2im_overwriting(dcols, cache.x.shape, kernel, cache.stride, cache.padding)
    return dx, dweight, dbias


@pytest.mark.parametrize(
    ("mutant", "wrong_tensor"),
    [
        (backward_dx_scaled, "x"),
        (backward_dweight_transposed, "weight"),
        (backward_dweight_flipped, "weight"),
        (backward_col2im_overwriting, "x"),
    ],
    ids=["dx_scaled", "dweight_transposed", "dweight_flipped", "col2im_overwriting"],
)
def test_gradcheck_catches_wrong_conv2d_backward(mutant, wrong_tensor):
    """Each mutant fails the check, in exactly the tensor it corrupts, on overlapping 3×3
    windows where the correct backward passes."""
    x, weight, bias = draw_conv(np.random.default_rng(0), OVERLAPPING, with_bias=True)
    assert_gradients_match(conv_gradcheck(OVERLAPPING, x, weight, bias))
    report = conv_gradcheck(OVERLAPPING, x, weight, bias, backward=mutant, title=mutant.__name__)
    assert not report.passed, str(report)
    assert [row.name for row in report.rows if not row.passed] == [wrong_tensor], str(report)


def test_overwriting_col2im_is_only_wrong_where_windows_overlap():
    """Control for mutant (c): with stride == kernel no two windows share a pixel, so ``=`` and
    ``+=`` agree and the mutant passes; the failure above is due to overlap alone."""
    case = OVERLAPPING._replace(stride=(3, 3), padding=(0, 0))
    x, weight, bias = draw_conv(np.random.default_rng(0), case, with_bias=True)
    report = conv_gradcheck(case, x, weight, bias, backward=backward_col2im_overwriting)
    assert_gradients_match(report)
