"""Exercises of reading notebook 4: im2col, col2im, and the convolution's backward."""

from __future__ import annotations

import numpy as np

from npcbam.exercises.catalogue.cases import shape_label, upstream, values, weights
from npcbam.exercises.registry import Case, Exercise, Misconception, Part
from npcbam.ops.conv import conv2d_backward, conv2d_forward
from npcbam.ops.im2col import col2im, conv_output_size, im2col


def im2col_reference(x, kh, kw, stride, padding):
    return im2col(x, (kh, kw), (stride, stride), (padding, padding))


def col2im_reference(cols, x_shape, kh, kw, stride, padding):
    return col2im(cols, tuple(x_shape), (kh, kw), (stride, stride), (padding, padding))


def conv2d_reference(dy, x, w, stride, padding):
    bias = np.zeros(w.shape[0])  # any bias: its gradient does not depend on it
    _, cache = conv2d_forward(x, w, bias, stride=stride, padding=padding)
    return conv2d_backward(dy, cache)


# (N, C, H, W, kh, kw, stride, padding): stride < kernel (overlapping windows) and padding 0,
# non-square kernels and inputs, stride 2, N = 1
GEOMETRIES = (
    (2, 3, 5, 4, 3, 3, 1, 1),
    (1, 2, 5, 6, 3, 3, 1, 0),
    (2, 2, 7, 6, 3, 2, 2, 1),
    (1, 1, 4, 5, 2, 2, 2, 0),
)


def _label(n, c, h, w, kh, kw, stride, padding):
    return shape_label(N=n, C=c, H=h, W=w, kernel=f"{kh}x{kw}", stride=stride, padding=padding)


def out_size(h, w, kh, kw, stride, padding):
    return conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)


def im2col_cases(rng):
    cases = []
    for n, c, h, w, kh, kw, s, p in GEOMETRIES:
        args = (values(rng, (n, c, h, w)), kh, kw, s, p)
        cases.append(Case(_label(n, c, h, w, kh, kw, s, p), args))
    return cases


def col2im_cases(rng):
    cases = []
    for n, c, h, w, kh, kw, s, p in GEOMETRIES:
        ho, wo = out_size(h, w, kh, kw, s, p)
        cols = values(rng, (c * kh * kw, n * ho * wo))
        cases.append(Case(_label(n, c, h, w, kh, kw, s, p), (cols, (n, c, h, w), kh, kw, s, p)))
    return cases


def conv2d_cases(rng):
    cases = []
    for (n, c, h, w, kh, kw, s, p), filters in zip(GEOMETRIES, (2, 3, 3, 1)):
        ho, wo = out_size(h, w, kh, kw, s, p)
        x, kernel = values(rng, (n, c, h, w)), weights(rng, (filters, c, kh, kw))
        label = _label(n, c, h, w, kh, kw, s, p) + f", F={filters}"
        cases.append(Case(label, (upstream(rng, (n, filters, ho, wo)), x, kernel, s, p)))
    return cases


# -- wrong im2col layouts ----------------------------------------------------------------------


def im2col_columns_ijn(x, kh, kw, stride, padding):
    cols = im2col_reference(x, kh, kw, stride, padding)
    n = x.shape[0]
    ho, wo = out_size(*x.shape[2:], kh, kw, stride, padding)
    # columns (n, i, j) -> (i, j, n), CS231n's order
    return cols.reshape(-1, n, ho, wo).transpose(0, 2, 3, 1).reshape(cols.shape)


def im2col_rows_uvc(x, kh, kw, stride, padding):
    cols = im2col_reference(x, kh, kw, stride, padding)
    c = x.shape[1]
    # rows (c, u, v) -> (u, v, c)
    return cols.reshape(c, kh, kw, -1).transpose(1, 2, 0, 3).reshape(cols.shape)


# -- col2im with = where += belongs ------------------------------------------------------------


def col2im_overwriting(
    cols, x_shape, kernel, stride, padding, last_offset_first, original, dilation=(1, 1)
):
    """col2im where each kernel offset's contribution *overwrites* what is there: a pixel
    keeps the value of the last write. Offsets are written in (u, v) order (a vectorized
    col2im with ``=``), or, with ``last_offset_first``, in reverse order, which is what a loop
    over the output windows (i, j) with ``=`` leaves (the last window touching a pixel is the
    one reaching it with the smallest offset). ``original`` is npcbam's col2im (this
    function replaces it while planted)."""
    kh, kw = kernel
    rows = cols.reshape(x_shape[1], kh, kw, -1)  # (C*kh*kw, M) -> (C, kh, kw, M)
    offsets = [(u, v) for u in range(kh) for v in range(kw)]
    out = np.zeros(x_shape, dtype=cols.dtype)
    for u, v in reversed(offsets) if last_offset_first else offsets:
        only = np.zeros_like(rows)
        only[:, u, v] = rows[:, u, v]  # this offset's columns alone
        reached = np.zeros_like(rows)
        reached[:, u, v] = 1.0
        value = original(only.reshape(cols.shape), x_shape, kernel, stride, padding, dilation)
        touched = original(reached.reshape(cols.shape), x_shape, kernel, stride, padding, dilation)
        touched = touched > 0
        out = np.where(touched, value, out)
    return out


# conv2d_backward passes its dilation to col2im (d = 1 in these exercises): the plants take it


def col2im_assign_by_offset(
    cols, x_shape, kernel, stride, padding, dilation=(1, 1), original=col2im
):
    return col2im_overwriting(cols, x_shape, kernel, stride, padding, False, original, dilation)


def col2im_assign_by_window(
    cols, x_shape, kernel, stride, padding, dilation=(1, 1), original=col2im
):
    return col2im_overwriting(cols, x_shape, kernel, stride, padding, True, original, dilation)


def col2im_uncropped(cols, x_shape, kh, kw, stride, padding):
    n, c, h, w = x_shape
    padded_shape = (n, c, h + 2 * padding, w + 2 * padding)
    return col2im_reference(cols, padded_shape, kh, kw, stride, 0)


ASSIGN_TEXT = (
    "where windows overlap (stride < kernel) a pixel belongs to several columns and must "
    "receive their sum"
)
ASSIGN_BY_WINDOW = Misconception(
    "col2im_assign_by_window",
    "your x̄ writes each window's patch with `=` (a loop over the windows): " + ASSIGN_TEXT,
    plants=lambda: {"col2im": col2im_assign_by_window},
)
ASSIGN_BY_OFFSET = Misconception(
    "col2im_assign_by_offset",
    "your x̄ adds each kernel offset's slice with `=` instead of `+=`: " + ASSIGN_TEXT,
    plants=lambda: {"col2im": col2im_assign_by_offset},
)

# -- wrong convolution backward ----------------------------------------------------------------


def conv_bias_per_image(dy, x, w, stride, padding):
    dx, dw, _ = conv2d_reference(dy, x, w, stride, padding)
    return dx, dw, dy.sum(axis=(2, 3))  # (N, F): the batch sum is missing


def conv_kernel_not_flipped(dy, x, w, stride, padding):
    _, dw, db = conv2d_reference(dy, x, w, stride, padding)
    # the "full convolution of ȳ with the flipped kernel" computed with the kernel as it is
    dx_unflipped, _, _ = conv2d_reference(dy, x, w[:, :, ::-1, ::-1], stride, padding)
    return dx_unflipped, dw, db


def conv_folded_with(wrong_col2im):
    """conv2d's backward with x̄ folded back by ``wrong_col2im``, the textbook way: x̄ =
    col2im(Wᵀ·Ḡ). (npcbam's conv2d folds grid columns, :func:`npcbam.ops.im2col.fold`, so a
    col2im planted into npcbam would not reach it: the variant spells the fold out.)"""

    def variant(dy, x, w, stride, padding):
        _, dw, db = conv2d_reference(dy, x, w, stride, padding)
        f = w.shape[0]
        dy_mat = dy.transpose(1, 0, 2, 3).reshape(f, -1)  # (N, F, Ho, Wo) -> (F, N*Ho*Wo)
        dcols = w.reshape(f, -1).T @ dy_mat  # (C*kh*kw, F) @ (F, N*Ho*Wo)
        dx = wrong_col2im(dcols, x.shape, w.shape[2:], (stride, stride), (padding, padding))
        return dx, dw, db

    return variant


def conv_weight_grad_reshaped_transposed(dy, x, w, stride, padding):
    dx, dw, db = conv2d_reference(dy, x, w, stride, padding)
    f = w.shape[0]
    # cols @ Gᵀ is (C*kh*kw, F): reshaped straight to (F, C, kh, kw) without the transpose
    return dx, dw.reshape(f, -1).T.reshape(w.shape), db


IM2COL = Exercise(
    name="im2col",
    title="im2col: every receptive field a column",
    points=2,
    notebook="ex04_im2col_convolution",
    reading="04_im2col_convolution.ipynb §2",
    theory="docs/theory/convolution.md",
    parts=(
        Part(
            "im2col",
            "im2col(x, kh, kw, stride, padding) -> cols",
            (("cols", "cols"),),
            im2col_reference,
            im2col_cases,
            (
                Misconception(
                    "im2col_columns_ijn",
                    "your columns hold the right patches in the order (i, j, n) (CS231n's); "
                    "this exercise orders them (n, i, j): image first, then output row and "
                    "column",
                    variant=im2col_columns_ijn,
                ),
                Misconception(
                    "im2col_rows_uvc",
                    "your rows are ordered (u, v, c); they must be (c, u, v), the order of "
                    "W.reshape(F, C·kh·kw)",
                    variant=im2col_rows_uvc,
                ),
                Misconception(
                    "im2col_padding_ignored",
                    "your im2col ignores the padding: pad x with zeros on each side first",
                    variant=lambda x, kh, kw, s, p: im2col_reference(x, kh, kw, s, 0),
                ),
                Misconception(
                    "im2col_stride_ignored",
                    "your im2col ignores the stride: window (i, j) starts at row s·i, column s·j",
                    variant=lambda x, kh, kw, s, p: im2col_reference(x, kh, kw, 1, p),
                ),
            ),
        ),
    ),
)

COL2IM = Exercise(
    name="col2im",
    title="col2im: the adjoint, where overlapping windows add",
    points=2,
    notebook="ex04_im2col_convolution",
    reading="04_im2col_convolution.ipynb §4",
    theory="docs/theory/convolution.md",
    parts=(
        Part(
            "col2im",
            "col2im(cols, x_shape, kh, kw, stride, padding) -> x",
            (("x", "x"),),
            col2im_reference,
            col2im_cases,
            (
                ASSIGN_BY_WINDOW,
                ASSIGN_BY_OFFSET,
                Misconception(
                    "col2im_padding_not_cropped",
                    "your result still has the padding: crop padding rows and columns from "
                    "each side to get (N, C, H, W)",
                    variant=col2im_uncropped,
                ),
            ),
        ),
    ),
)

CONV2D = Exercise(
    name="conv2d",
    title="Convolution backward: x̄, W̄ and b̄",
    points=3,
    notebook="ex04_im2col_convolution",
    reading="04_im2col_convolution.ipynb §4–5",
    theory="docs/theory/convolution.md",
    parts=(
        Part(
            "conv2d_backward",
            "conv2d_backward(dy, x, w, stride, padding) -> (dx, dw, db)",
            (("dx", "x̄"), ("dw", "W̄"), ("db", "b̄")),
            conv2d_reference,
            conv2d_cases,
            (
                Misconception(
                    "conv_bias_not_summed_over_batch",
                    "your b̄ is summed over the positions but not over the batch: b̄_f = "
                    "Σ_{n,i,j} ȳ_{nfij}, one number per filter",
                    variant=conv_bias_per_image,
                ),
                Misconception(
                    "conv_kernel_not_flipped",
                    "your x̄ correlates ȳ with the kernel as it is: as a convolution, x̄ uses "
                    "the kernel flipped in both spatial axes (W[:, :, ::-1, ::-1])",
                    variant=conv_kernel_not_flipped,
                ),
                Misconception(
                    "conv_weight_grad_transposed",
                    "your W̄ is cols·Ḡᵀ reshaped to (F, C, kh, kw) without transposing: the "
                    "product Ḡ·colsᵀ is (F, C·kh·kw) and reshapes directly",
                    variant=conv_weight_grad_reshaped_transposed,
                ),
                Misconception(
                    "conv_col2im_assign_by_window",
                    "your x̄ writes each window's share with `=`: " + ASSIGN_TEXT,
                    variant=conv_folded_with(col2im_assign_by_window),
                ),
                Misconception(
                    "conv_col2im_assign_by_offset",
                    "your x̄ folds the columns back with `=` instead of `+=`: " + ASSIGN_TEXT,
                    variant=conv_folded_with(col2im_assign_by_offset),
                ),
            ),
        ),
    ),
)

EXERCISES = (IM2COL, COL2IM, CONV2D)
