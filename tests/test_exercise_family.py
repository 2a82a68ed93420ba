"""The family's exercises (ECA, batch normalisation over vectors, BAM's gate, dilated col2im)
against students' code: every catalogued mistake, written independently of the catalogue the
way a student would (loops, another order of operations), gets exactly its diagnosis, and the
right answers written that way pass. The planted tests of ``test_exercises.py`` show that the
catalogue recognises its own variants; these show that the variants are the mistakes students
actually make."""

from __future__ import annotations

import numpy as np
import pytest

from npcbam.exercises import evaluate
from npcbam.exercises.runner import LocalRunner

# -- ECA's convolution across channels: loops over (n, c, j) -----------------------------------


def eca_loops(dy, v, w, read=None, both=True, wrap=False, flip=False):
    """Loops with bounds checks, no padded arrays: tap j of output c reads v_{read(c, j, p)}
    (c + j - p when right); with ``both`` False only w̄ reads there, v̄ is right."""
    right = lambda c, j, p: c + j - p  # noqa: E731
    read = read or right
    n, channels = v.shape
    k = w.shape[0]
    p = (k - 1) // 2
    dw, dv = np.zeros(k), np.zeros_like(v)
    for image in range(n):
        for c in range(channels):
            for j in range(k):
                for grad, at in (("w", read(c, j, p)), ("v", (read if both else right)(c, j, p))):
                    if wrap:
                        at %= channels
                    elif not 0 <= at < channels:
                        continue
                    if grad == "w":
                        dw[j] += dy[image, c] * v[image, at]
                    else:
                        dv[image, at] += (w[k - 1 - j] if flip else w[j]) * dy[image, c]
    return dv, dw


def eca_padded(dy, v, w, crop="both", assign=False):
    """The op's way: w̄ from the padded vector, v̄ added tap by tap onto a padded zero vector."""
    n, channels = v.shape
    k = w.shape[0]
    p = (k - 1) // 2
    v_padded = np.pad(v, ((0, 0), (p, p)))
    dw = np.array([np.sum(dy * v_padded[:, j : j + channels]) for j in range(k)])
    dv_padded = np.zeros((n, channels + 2 * p))
    for j in range(k):
        if assign:
            dv_padded[:, j : j + channels] = w[j] * dy
        else:
            dv_padded[:, j : j + channels] += w[j] * dy
    if crop == "none":
        return dv_padded, dw
    start = p if crop == "both" else 0
    return dv_padded[:, start : start + channels].copy(), dw


# -- batch normalisation over vectors: the textbook formula, one switch per term -----------------


def bn_formula(dy, x, gamma, mean_term=True, var_term=True, ddof=0, dgamma_sum=True, with_x=False):
    mean = x.mean(axis=0)
    inv_std = 1.0 / np.sqrt(x.var(axis=0, ddof=ddof) + 1e-5)
    x_hat = (x - mean) * inv_std
    g = dy * gamma
    dx = g - (g.mean(axis=0) if mean_term else 0.0)
    dx = dx - (x_hat * (g * x_hat).mean(axis=0) if var_term else 0.0)
    dgamma = dy * (x if with_x else x_hat)
    return dx * inv_std, dgamma.sum(axis=0) if dgamma_sum else dgamma, dy.sum(axis=0)


def bn_without_gamma(dy, x, gamma):
    dx, _, _ = bn_formula(dy, x, np.ones_like(gamma))
    _, dgamma, dbeta = bn_formula(dy, x, gamma)
    return dx, dgamma, dbeta


def bn_graph(dy, x, gamma):
    """The computational graph node by node (mean, centred, variance, inverse std), the mean's
    path included: another order of operations."""
    n = x.shape[0]
    mean = x.sum(axis=0) / n
    centred = x - mean
    var = (centred * centred).sum(axis=0) / n
    std = np.sqrt(var + 1e-5)
    x_hat = centred / std
    dx_hat = dy * gamma
    dcentred = dx_hat / std
    dstd = -(dx_hat * centred).sum(axis=0) / std**2
    dvar = dstd / (2 * std)
    dcentred += 2 * centred * dvar / n
    dx = dcentred - dcentred.sum(axis=0) / n
    return dx, (dy * x_hat).sum(axis=0), dy.sum(axis=0)


# -- BAM's residual gate ----------------------------------------------------------------------


def bam_formula(dy, x, mc, ms, identity=True, gate=True, reduce=None, axes=((2, 3), (1,))):
    reduce = reduce or (lambda t, over: t.sum(axis=over, keepdims=True))
    s = 1.0 / (1.0 + np.exp(-(mc + ms)))
    dx = (dy if identity else 0.0) + (dy * s if gate else 0.0)
    da = dy * x * s * (1.0 - s)
    return dx, reduce(da, axes[0]), reduce(da, axes[1])


def bam_sigmoid_squared(dy, x, mc, ms):
    s = 1.0 / (1.0 + np.exp(-(mc + ms)))
    da = dy * x * s * s
    return dy * (1.0 + s), da.sum(axis=(2, 3), keepdims=True), da.sum(axis=1, keepdims=True)


def bam_over_batch(dy, x, mc, ms):
    dx, dmc, dms = bam_formula(dy, x, mc, ms)
    return dx, dmc.sum(axis=0, keepdims=True), dms.sum(axis=0, keepdims=True)


def bam_official(dy, x, mc, ms):
    a = mc * ms
    s = 1.0 / (1.0 + np.exp(-a))
    da = dy * x * s * (1.0 - s)
    return (
        dy * (1.0 + s),
        (da * ms).sum(axis=(2, 3), keepdims=True),
        (da * mc).sum(axis=1, keepdims=True),
    )


# -- dilated col2im: loops over the windows ------------------------------------------------------


def dilated_loops(
    cols, x_shape, kh, kw, stride, padding, dilation, rows=None, columns=None, assign=False
):
    """Window by window, tap by tap; tap (u, v) at (rows·u, columns·v) of its window."""
    n, c, height, width = x_shape
    rows = dilation if rows is None else rows
    columns = dilation if columns is None else columns
    ho = (height + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (width + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    patches = cols.reshape(c, kh, kw, n, ho, wo)
    padded = np.zeros((n, c, height + 2 * padding, width + 2 * padding))
    for i in range(ho):
        for j in range(wo):
            for u in range(kh):
                for v in range(kw):
                    y, z = stride * i + rows * u, stride * j + columns * v
                    if assign:
                        padded[:, :, y, z] = patches[:, u, v, :, i, j].T
                    else:
                        padded[:, :, y, z] += patches[:, u, v, :, i, j].T
    return padded[:, :, padding : padding + height, padding : padding + width]


def dilated_assign_by_offset(cols, x_shape, kh, kw, stride, padding, dilation):
    n, c, height, width = x_shape
    ho = (height + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (width + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    patches = cols.reshape(c, kh, kw, n, ho, wo)
    padded = np.zeros((n, c, height + 2 * padding, width + 2 * padding))
    for u in range(kh):
        for v in range(kw):
            top, left = dilation * u, dilation * v
            window = patches[:, u, v].transpose(1, 0, 2, 3)
            padded[:, :, top : top + stride * ho : stride, left : left + stride * wo : stride] = (
                window
            )
    return padded[:, :, padding : padding + height, padding : padding + width]


ECA = ("eca_conv1d", "conv1d_channels_backward")
early = lambda c, j, p: c + j - p - 1  # noqa: E731  (one channel early)
BN = ("batchnorm1d", "batchnorm1d_backward")
BAM = ("bam_gate", "bam_gate_backward")
DILATED = ("dilated_col2im", "dilated_col2im")

STUDENTS = [
    (ECA, "eca_padding_off_by_one", lambda *a: eca_loops(*a, read=early, both=False)),
    (ECA, "eca_shifted_by_one", lambda *a: eca_loops(*a, read=early)),
    (ECA, "eca_true_convolution", lambda *a: eca_loops(*a, read=lambda c, j, p: c - j + p)),
    (ECA, "eca_dv_kernel_not_flipped", lambda *a: eca_loops(*a, flip=True)),
    (ECA, "eca_circular_padding", lambda *a: eca_loops(*a, wrap=True)),
    (ECA, "eca_padding_not_cropped", lambda *a: eca_padded(*a, crop="none")),
    (ECA, "eca_cropped_at_one_end", lambda *a: eca_padded(*a, crop="end")),
    (ECA, "eca_assign_over_taps", lambda *a: eca_padded(*a, assign=True)),
    (BN, "bn_mean_path_dropped", lambda *a: bn_formula(*a, mean_term=False)),
    (BN, "bn_variance_path_dropped", lambda *a: bn_formula(*a, var_term=False)),
    (BN, "bn_statistics_constant", lambda *a: bn_formula(*a, mean_term=False, var_term=False)),
    (BN, "bn_unbiased_variance", lambda *a: bn_formula(*a, ddof=1)),
    (BN, "bn_dgamma_not_summed", lambda *a: bn_formula(*a, dgamma_sum=False)),
    (BN, "bn_dgamma_with_x", lambda *a: bn_formula(*a, with_x=True)),
    (BN, "bn_dx_without_gamma", bn_without_gamma),
    (BAM, "bam_identity_dropped", lambda *a: bam_formula(*a, identity=False)),
    (BAM, "bam_gate_term_dropped", lambda *a: bam_formula(*a, gate=False)),
    (BAM, "bam_maps_not_reduced", lambda *a: bam_formula(*a, reduce=lambda t, over: t)),
    (BAM, "bam_maps_reduced_over_wrong_axes", lambda *a: bam_formula(*a, axes=((1,), (2, 3)))),
    (BAM, "bam_maps_summed_over_batch", bam_over_batch),
    (
        BAM,
        "bam_maps_averaged",
        lambda *a: bam_formula(*a, reduce=lambda t, over: t.mean(axis=over, keepdims=True)),
    ),
    (BAM, "bam_official_form", bam_official),
    (BAM, "sigmoid_squared", bam_sigmoid_squared),
    (DILATED, "dilation_ignored", lambda *a: dilated_loops(*a, rows=1, columns=1)),
    (DILATED, "dilation_on_rows_only", lambda *a: dilated_loops(*a, columns=1)),
    (DILATED, "dilated_col2im_assign_by_window", lambda *a: dilated_loops(*a, assign=True)),
    (DILATED, "dilated_col2im_assign_by_offset", dilated_assign_by_offset),
]


@pytest.mark.parametrize(("exercise", "key", "student"), STUDENTS, ids=[k for _, k, _ in STUDENTS])
def test_a_students_mistake_gets_its_diagnosis(exercise, key, student):
    name, function = exercise
    result = evaluate(name, LocalRunner({function: student}))
    assert result.status == "failed", result.report
    assert result.diagnoses == [key], result.report


RIGHT = [
    (ECA, eca_loops),
    (ECA, eca_padded),
    (BN, bn_formula),
    (BN, bn_graph),
    (BAM, bam_formula),
    (DILATED, dilated_loops),
]


@pytest.mark.parametrize(("exercise", "student"), RIGHT, ids=[s.__name__ for _, s in RIGHT])
def test_a_right_answer_written_differently_passes(exercise, student):
    name, function = exercise
    result = evaluate(name, LocalRunner({function: student}))
    assert result.status == "passed", result.report
