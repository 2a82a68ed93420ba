"""Exercises of CBAM's family (SE, ECA, BAM): the backward passes their new ops bring.

ECA's 1-D convolution across channels, batch normalisation over vectors (BAM's channel
branch), BAM's residual gate and the dilated col2im of BAM's spatial branch. As everywhere in
the catalogue, the references call npcbam's ops and every misconception is the reference with
one thing changed.
"""

from __future__ import annotations

import numpy as np

from npcbam.exercises.catalogue.attention import GATE_X_TERM_MISSING, SIGMOID_SQUARED
from npcbam.exercises.catalogue.cases import shape_label, upstream, values, weights
from npcbam.exercises.catalogue.convolution import col2im_overwriting
from npcbam.exercises.registry import Case, Exercise, Misconception, Part
from npcbam.nn.bam import COMBINE
from npcbam.ops.activations import sigmoid_backward, sigmoid_forward
from npcbam.ops.conv1d_channels import conv1d_channels_backward, conv1d_channels_forward
from npcbam.ops.gating import gate_backward, gate_forward
from npcbam.ops.im2col import col2im, conv_output_size
from npcbam.ops.norm import batch_statistics, batchnorm2d_backward, batchnorm2d_forward

NOTEBOOK = "ex09_attention_family"

# -- ECA: the 1-D convolution across channels ---------------------------------------------------


def eca_conv1d_reference(dy, v, w):
    """v̄ and w̄ of ECA's convolution across channels, from npcbam's op pair."""
    _, cache = conv1d_channels_forward(v, w)
    return conv1d_channels_backward(dy, cache)


def eca_cases(rng):
    cases = []
    # (N, C, k): k = 3 as ECA's C = 64 rule gives, k = C (every tap meets the padding), N = 1,
    # k = 1 (what the rule gives for C = 2: a plain scale, no neighbours)
    for n, c, k in ((2, 7, 3), (1, 5, 5), (3, 9, 5), (2, 6, 1)):
        args = (upstream(rng, (n, c)), values(rng, (n, c)), weights(rng, (k,)))
        cases.append(Case(shape_label(N=n, C=c, k=k), args))
    return cases


def windows_one_channel_early(v, kernel_size, original):
    """The windows with every tap one channel early: tap j of channel c reads
    v_{c+j-p-1} (p + 1 zeros at the start, p - 1 at the end)."""
    channels = v.shape[1]
    shifted = np.pad(v, ((0, 0), (1, 0)))  # (N, C) -> (N, C + 1): a zero channel in front
    return original(shifted, kernel_size)[:, :channels]  # (N, C + 1, k) -> the first C windows


def eca_padded_gradient(dy, w):
    r"""v̄ before the crop, (N, C + k - 1): :math:`w_j \bar y` added onto the slice of the
    padded vector that tap j read. It is the reference's v̄ for a vector p longer at each end
    and ȳ padded with p zeros."""
    p = (w.shape[0] - 1) // 2
    dy_padded = np.pad(dy, ((0, 0), (p, p)))  # (N, C) -> (N, C + 2p)
    dv, _ = eca_conv1d_reference(dy_padded, np.zeros_like(dy_padded), w)
    return dv


def eca_shifted_by_one(dy, v, w):
    """The gradients of the convolution shifted by one channel, o_c = Σ_j w_j v_{c+j-p-1}: the
    reference on v with a zero channel in front, its extra output given no gradient."""
    dy_longer = np.pad(dy, ((0, 0), (0, 1)))  # (N, C) -> (N, C + 1): output C gets 0
    v_longer = np.pad(v, ((0, 0), (1, 0)))  # (N, C) -> (N, C + 1): the zero channel in front
    dv_longer, dw = eca_conv1d_reference(dy_longer, v_longer, w)
    return dv_longer[:, 1:].copy(), dw  # (N, C + 1) -> (N, C): the zero channel dropped


def eca_as_true_convolution(dy, v, w):
    _, dw = eca_conv1d_reference(dy, v, w)
    # the forward taken as o_c = Σ_j w_j v_{c-j+p}: its w̄ is the reference's mirrored, its v̄
    # correlates ȳ with the kernel as it is
    return conv1d_channels_forward(dy, w)[0], dw[::-1].copy()


def eca_dv_kernel_not_flipped(dy, v, w):
    _, dw = eca_conv1d_reference(dy, v, w)
    return conv1d_channels_forward(dy, w)[0], dw  # the forward applied to ȳ


def eca_padding_not_cropped(dy, v, w):
    _, dw = eca_conv1d_reference(dy, v, w)
    return eca_padded_gradient(dy, w), dw


def eca_cropped_at_one_end(dy, v, w):
    _, dw = eca_conv1d_reference(dy, v, w)
    c = v.shape[1]
    return eca_padded_gradient(dy, w)[:, :c].copy(), dw  # all 2p padding entries cut from the end


def eca_assigned_over_taps(dy, v, w):
    """v̄ where each tap's w_j ȳ is written into the padded gradient with `=`: a position keeps
    the last tap that reached it."""
    _, dw = eca_conv1d_reference(dy, v, w)
    n, c = v.shape
    k = w.shape[0]
    p = (k - 1) // 2
    dpadded = np.zeros((n, c + 2 * p))  # (N, C + k - 1)
    for j in range(k):
        only_tap_j = np.where(np.arange(k) == j, w, 0.0)  # the kernel with one tap kept
        dpadded[:, j : j + c] = eca_padded_gradient(dy, only_tap_j)[:, j : j + c]
    return dpadded[:, p : p + c].copy(), dw


def eca_circular_padding(dy, v, w):
    """The gradients of the convolution with wrap-around padding (np.roll): channel 0's left
    neighbour is channel C - 1 instead of a zero."""
    k = w.shape[0]
    p = (k - 1) // 2
    # np.roll(t, s)[:, c] = t[:, c - s]: tap j reads v_{(c+j-p) mod C}, ȳ comes back from
    # channel (i - j + p) mod C
    dw = np.array([np.sum(dy * np.roll(v, p - j, axis=1)) for j in range(k)])
    dv = sum(w[j] * np.roll(dy, j - p, axis=1) for j in range(k))
    return dv, dw


ECA_CONV1D = Exercise(
    name="eca_conv1d",
    title="ECA's 1-D convolution across channels, backward",
    points=2,
    notebook=NOTEBOOK,
    reading="09_attention_family.ipynb §2",
    theory="docs/theory/eca.md",
    parts=(
        Part(
            "conv1d_channels_backward",
            "conv1d_channels_backward(dy, v, w) -> (dv, dw)",
            (("dv", "v̄"), ("dw", "w̄")),
            eca_conv1d_reference,
            eca_cases,
            (
                Misconception(
                    "eca_padding_off_by_one",
                    "your w̄ pairs ȳ_{nc} with v_{n,c+j−p−1}, the neighbour of what tap j read: "
                    "the windows are off by one channel (pad (k − 1)/2 zeros at both ends, so "
                    "that tap j of channel c reads v_{n,c+j−p})",
                    plants=lambda: {"channel_windows": windows_one_channel_early},
                ),
                Misconception(
                    "eca_shifted_by_one",
                    "your v̄ and w̄ both pair ȳ_{nc} with v_{n,c+j−p−1}: they are the gradients "
                    "of a convolution shifted by one channel; tap j of channel c reads "
                    "v_{n,c+j−p}, p = (k − 1)/2",
                    variant=eca_shifted_by_one,
                ),
                Misconception(
                    "eca_true_convolution",
                    "your v̄ and w̄ are those of a true convolution (kernel flipped in the "
                    "forward): ECA's Conv1d is a cross-correlation, o_{nc} = Σ_j w_j "
                    "v_{n,c+j−p}, so w̄_j = Σ ȳ_{nc} v_{n,c+j−p} and v̄ uses the flipped kernel",
                    variant=eca_as_true_convolution,
                ),
                Misconception(
                    "eca_dv_kernel_not_flipped",
                    "your v̄ applies the forward to ȳ (kernel as it is): v̄_{ni} = Σ_j w_j "
                    "ȳ_{n,i−j+p}, a correlation with the flipped kernel",
                    variant=eca_dv_kernel_not_flipped,
                ),
                Misconception(
                    "eca_padding_not_cropped",
                    "your v̄ still has the padding, (N, C + k − 1): crop p = (k − 1)/2 entries "
                    "from each end, the positions of the zeros, which are no inputs",
                    variant=eca_padding_not_cropped,
                ),
                Misconception(
                    "eca_cropped_at_one_end",
                    "your v̄ is the padded gradient with all k − 1 padding entries cut from the "
                    "end: the padding sits at both ends, so keep entries p to p + C − 1",
                    variant=eca_cropped_at_one_end,
                ),
                Misconception(
                    "eca_assign_over_taps",
                    "your v̄ writes each tap's w_j ȳ with `=` instead of `+=`: each v_{ni} is "
                    "read by up to k taps (neighbouring windows overlap), and its gradient is "
                    "their sum",
                    variant=eca_assigned_over_taps,
                ),
                Misconception(
                    "eca_circular_padding",
                    "your v̄ and w̄ wrap around at the ends (np.roll): the first channel's "
                    "left neighbour is a zero of the padding, not the last channel",
                    variant=eca_circular_padding,
                ),
            ),
        ),
    ),
)

# -- batch normalisation over vectors (training mode) -------------------------------------------

EPS = 1e-5


def batchnorm1d_backward_of(dy, x, gamma, batch_stats=True):
    """npcbam's batch normalisation on the (N, D) -> (N, D, 1, 1) view (as ``BatchNorm1d``)."""
    maps = x[:, :, None, None]  # (N, D) -> (N, D, 1, 1): one "channel" per feature
    mean, var = batch_statistics(maps)  # (D,) each, over the N values of every feature
    beta = np.zeros_like(gamma)  # any shift: the gradients do not depend on it
    _, cache = batchnorm2d_forward(maps, gamma, beta, mean, var, EPS, batch_stats)
    dx, dgamma, dbeta = batchnorm2d_backward(dy[:, :, None, None], cache)
    return dx[:, :, 0, 0], dgamma, dbeta  # (N, D, 1, 1) -> (N, D)


def batchnorm1d_reference(dy, x, gamma):
    return batchnorm1d_backward_of(dy, x, gamma)


def normalised(x):
    """x̂ and 1/sqrt(σ² + ε) of every feature, from npcbam's batch statistics."""
    mean, var = batch_statistics(x[:, :, None, None])  # (D,) each
    inv_std = 1.0 / np.sqrt(var + EPS)
    return (x - mean) * inv_std, inv_std


def bn_cases(rng):
    cases = []
    # (N, D): D = 1, N = 2 (x̂ = ±1 almost), N > D and N < D; not N = 1, where the batch's
    # variance is 0 and training-mode BN is undefined (PyTorch refuses it)
    for n, d in ((4, 3), (2, 5), (6, 1), (3, 4)):
        x = values(rng, (n, d)) + values(rng, (d,), 1.0)  # feature means away from 0
        gamma = 0.5 + values(rng, (d,), 0.4)  # in [0.1, 0.9]: never 1
        cases.append(Case(shape_label(N=n, D=d), (upstream(rng, (n, d)), x, gamma)))
    return cases


def bn_mean_path_dropped(dy, x, gamma):
    dx, dgamma, dbeta = batchnorm1d_reference(dy, x, gamma)
    _, inv_std = normalised(x)
    mean_g = gamma * dbeta / x.shape[0]  # the mean over the batch of ḡ = γ ȳ, (D,)
    return dx + mean_g * inv_std, dgamma, dbeta  # the term −mean(ḡ)/σ̃ left out


def bn_variance_path_dropped(dy, x, gamma):
    dx, dgamma, dbeta = batchnorm1d_reference(dy, x, gamma)
    x_hat, inv_std = normalised(x)
    mean_g_xhat = gamma * dgamma / x.shape[0]  # the mean of ḡ ⊙ x̂, (D,)
    return dx + x_hat * mean_g_xhat * inv_std, dgamma, dbeta  # the term −x̂ mean(ḡ x̂)/σ̃ left out


def unbiased_statistics(x, original):
    mean, var = original(x)
    m = x.size // x.shape[1]  # values per feature
    return mean, var * m / (m - 1)


def bn_dgamma_not_summed(dy, x, gamma):
    dx, _, dbeta = batchnorm1d_reference(dy, x, gamma)
    x_hat, _ = normalised(x)
    return dx, dy * x_hat, dbeta  # (N, D): one γ̄ per sample


def bn_dgamma_with_x(dy, x, gamma):
    dx, _, dbeta = batchnorm1d_reference(dy, x, gamma)
    return dx, (dy * x).sum(axis=0), dbeta


def bn_dx_without_gamma(dy, x, gamma):
    _, dgamma, dbeta = batchnorm1d_reference(dy, x, gamma)
    dx, _, _ = batchnorm1d_reference(dy, x, np.ones_like(gamma))
    return dx, dgamma, dbeta


BATCHNORM1D = Exercise(
    name="batchnorm1d",
    title="Batch normalisation over vectors (training mode), backward",
    points=3,
    notebook=NOTEBOOK,
    reading="09_attention_family.ipynb §4",
    theory="docs/theory/batchnorm.md",
    parts=(
        Part(
            "batchnorm1d_backward",
            "batchnorm1d_backward(dy, x, gamma) -> (dx, dgamma, dbeta)",
            (("dx", "x̄"), ("dgamma", "γ̄"), ("dbeta", "β̄")),
            batchnorm1d_reference,
            bn_cases,
            (
                Misconception(
                    "bn_mean_path_dropped",
                    "your x̄ treats the mean μ as a constant: the term through μ, "
                    "−(1/N) Σ_n ḡ_n / σ̃ (ḡ = γ ȳ, σ̃ = sqrt(σ² + ε)), is missing",
                    variant=bn_mean_path_dropped,
                ),
                Misconception(
                    "bn_variance_path_dropped",
                    "your x̄ treats the variance σ² as a constant: the term through σ², "
                    "−x̂ (1/N) Σ_n ḡ_n x̂_n / σ̃, is missing",
                    variant=bn_variance_path_dropped,
                ),
                Misconception(
                    "bn_statistics_constant",
                    "your x̄ is evaluation mode's, γ ȳ / σ̃: in training mode μ and σ² are "
                    "computed from the batch, and x̄ has two more terms, through each",
                    variant=lambda dy, x, gamma: batchnorm1d_backward_of(dy, x, gamma, False),
                ),
                Misconception(
                    "bn_unbiased_variance",
                    "your x̂ uses the unbiased variance (divided by N − 1, np.var(ddof=1)): "
                    "batch normalisation divides by N (PyTorch uses N − 1 only for the "
                    "running variance)",
                    plants=lambda: {"batch_statistics": unbiased_statistics},
                ),
                Misconception(
                    "bn_dgamma_not_summed",
                    "your γ̄ is ȳ ⊙ x̂ for every sample, (N, D): γ is shared by the whole "
                    "batch, so γ̄ = Σ_n ȳ_n ⊙ x̂_n, one number per feature",
                    variant=bn_dgamma_not_summed,
                ),
                Misconception(
                    "bn_dgamma_with_x",
                    "your γ̄ multiplies ȳ by x: γ scales the normalised x̂, so γ̄ = Σ_n ȳ_n ⊙ x̂_n",
                    variant=bn_dgamma_with_x,
                ),
                Misconception(
                    "bn_dx_without_gamma",
                    "your x̄ has no γ: the gradient reaching x̂ is ḡ = γ ȳ, and all three "
                    "terms of x̄ are made of it",
                    variant=bn_dx_without_gamma,
                ),
            ),
        ),
    ),
)

# -- BAM's residual gate -------------------------------------------------------------------------


def bam_gate_gradients(dy, x, mc, ms, gate="paper"):
    r"""y = x + x ⊙ σ(a), a = M_c + M_s (``gate="paper"``) or M_c ⊙ M_s (``"official"``), both
    maps broadcast to (N, C, H, W): the ops BAM's module runs, in its order."""
    combine_forward, combine_backward = COMBINE[gate]
    logits, combine_cache = combine_forward(mc, ms)  # (N, C, H, W), both maps broadcast
    attention, sigmoid_cache = sigmoid_forward(logits)  # σ(a), (N, C, H, W)
    _, gate_cache = gate_forward(x, attention)  # x ⊙ σ(a); y = x + that
    dx, dattention = gate_backward(dy, gate_cache)  # the gate's use of x ...
    dx += dy  # ... and the identity's: x is used twice
    dlogits = sigmoid_backward(dattention, sigmoid_cache)  # (N, C, H, W)
    dmc, dms = combine_backward(dlogits, combine_cache)  # each summed over its broadcast axes
    return dx, dmc, dms


def bam_gate_reference(dy, x, mc, ms):
    return bam_gate_gradients(dy, x, mc, ms)


def bam_cases(rng):
    cases = []
    # H·W ≠ C, N = 1, H = W = 1 (M_s one number per image)
    for n, c, h, w in ((2, 3, 4, 5), (1, 4, 3, 2), (3, 5, 2, 2), (2, 2, 1, 1)):
        args = (
            upstream(rng, (n, c, h, w)),
            values(rng, (n, c, h, w)),
            values(rng, (n, c, 1, 1), 1.5),
            values(rng, (n, 1, h, w), 1.5),
        )
        cases.append(Case(shape_label(N=n, C=c, H=h, W=w), args))
    return cases


def bam_identity_dropped(dy, x, mc, ms):
    dx, dmc, dms = bam_gate_reference(dy, x, mc, ms)
    return dx - dy, dmc, dms


# wrong reductions of a broadcast's gradient, with the signature of npcbam's sum_to_shape


def not_reduced(grad, shape):
    return grad  # (N, C, H, W), whatever the map's shape


def summed_over_the_other_axes(grad, shape):
    """Summed over the axes (batch excepted) where ``shape`` is NOT 1: M_c's gradient reduced
    like M_s's and the other way round."""
    axes = tuple(i for i, size in enumerate(shape) if i > 0 and size != 1)
    return grad.sum(axis=axes, keepdims=True)


def summed_over_batch_too(grad, shape, original):
    return original(grad, shape).sum(axis=0, keepdims=True)


def averaged_to_shape(grad, shape, original):
    copies = grad.size // int(np.prod(shape))  # how many entries each map entry was copied to
    return original(grad, shape) / copies


BAM_GATE = Exercise(
    name="bam_gate",
    title="BAM's residual gate backward",
    points=2,
    notebook=NOTEBOOK,
    reading="09_attention_family.ipynb §5",
    theory="docs/theory/bam.md",
    parts=(
        Part(
            "bam_gate_backward",
            "bam_gate_backward(dy, x, mc, ms) -> (dx, dmc, dms)",
            (("dx", "x̄"), ("dmc", "M̄_c"), ("dms", "M̄_s")),
            bam_gate_reference,
            bam_cases,
            (
                Misconception(
                    "bam_identity_dropped",
                    "your x̄ misses the identity path: F' = F + F ⊙ σ(a) uses F twice, so "
                    "x̄ = ȳ + ȳ ⊙ σ(a), not ȳ ⊙ σ(a)",
                    variant=bam_identity_dropped,
                ),
                Misconception(
                    "bam_gate_term_dropped",
                    "your x̄ is ȳ alone: the gate's use of F adds ȳ ⊙ σ(a) (product rule), so "
                    "x̄ = ȳ ⊙ (1 + σ(a))",
                    plants=lambda: GATE_X_TERM_MISSING,
                ),
                Misconception(
                    "bam_maps_not_reduced",
                    "your M̄_c and M̄_s are full-size (N, C, H, W): each map was broadcast in "
                    "the forward, so sum its gradient back to its shape (M_c over H, W; M_s "
                    "over C)",
                    plants=lambda: {"sum_to_shape": not_reduced},
                ),
                Misconception(
                    "bam_maps_reduced_over_wrong_axes",
                    "your M̄_c is summed over C and M̄_s over H, W: each map's gradient is "
                    "summed over the axes along which THAT map was broadcast (M_c (N, C, 1, 1) "
                    "over H, W; M_s (N, 1, H, W) over C)",
                    plants=lambda: {"sum_to_shape": summed_over_the_other_axes},
                ),
                Misconception(
                    "bam_maps_summed_over_batch",
                    "your M̄_c and M̄_s are also summed over the batch: every image has its own "
                    "maps, so sum over the broadcast axes only, never over N",
                    plants=lambda: {"sum_to_shape": summed_over_batch_too},
                ),
                Misconception(
                    "bam_maps_averaged",
                    "your M̄_c and M̄_s average over the broadcast axes: a broadcast copies "
                    "one value to many positions, and its gradient is the sum over them",
                    plants=lambda: {"sum_to_shape": averaged_to_shape},
                ),
                Misconception(
                    "bam_official_form",
                    "your gradients are those of the official code's gate 1 + σ(M_c ⊙ M_s) "
                    "(a product, so M̄_c = Σ ā ⊙ M_s); the paper's, asked here, is "
                    "1 + σ(M_c + M_s), where ā reaches both maps unchanged",
                    variant=lambda dy, x, mc, ms: bam_gate_gradients(dy, x, mc, ms, "official"),
                ),
                SIGMOID_SQUARED,
            ),
        ),
    ),
)

# -- col2im with dilation (BAM's spatial branch) -------------------------------------------------


def dilated_col2im_reference(cols, x_shape, kh, kw, stride, padding, dilation):
    """npcbam's col2im with one stride, padding and dilation for both axes."""
    square = (stride, stride), (padding, padding), (dilation, dilation)  # one value, both axes
    return col2im(cols, tuple(x_shape), (kh, kw), *square)


# (N, C, H, W, kh, kw, stride, padding, dilation): "same" padding = dilation (BAM's 3×3
# convolutions, also at BAM's d = 4), stride 2 with padding 0 on a non-square input,
# a 2×3 kernel at d = 3, and stride 3 ≥ the dilated span 3 (windows that do not overlap)
DILATED_GEOMETRIES = (
    (2, 2, 7, 6, 3, 3, 1, 2, 2),
    (1, 3, 9, 8, 3, 2, 2, 0, 2),
    (2, 1, 8, 9, 2, 3, 1, 1, 3),
    (1, 2, 9, 9, 3, 3, 1, 4, 4),
    (1, 1, 5, 7, 2, 2, 3, 0, 2),
)


def dilated_out_size(h, w, kh, kw, stride, padding, dilation):
    return (
        conv_output_size(h, kh, stride, padding, dilation),
        conv_output_size(w, kw, stride, padding, dilation),
    )


def dilated_col2im_cases(rng):
    cases = []
    for n, c, h, w, kh, kw, s, p, d in DILATED_GEOMETRIES:
        ho, wo = dilated_out_size(h, w, kh, kw, s, p, d)
        cols = values(rng, (c * kh * kw, n * ho * wo))
        label = shape_label(
            N=n, C=c, H=h, W=w, kernel=f"{kh}x{kw}", stride=s, padding=p, dilation=d
        )
        cases.append(Case(label, (cols, (n, c, h, w), kh, kw, s, p, d)))
    return cases


def col2im_taps_spaced(cols, x_shape, kh, kw, stride, padding, dilation, tap_step):
    """col2im with the dilation's windows (Ho × Wo of them, s apart) but tap (u, v) at
    (t_h u, t_w v) of its window, ``tap_step`` = (t_h, t_w), no farther apart than d.

    npcbam's col2im with dilation ``tap_step`` on an unpadded frame exactly as large as those
    windows reach, placed in the padded input, then cropped."""
    n, c, h, w = x_shape
    ho, wo = dilated_out_size(h, w, kh, kw, stride, padding, dilation)
    (th, tw), s = tap_step, stride
    reach = (s * (ho - 1) + th * (kh - 1) + 1, s * (wo - 1) + tw * (kw - 1) + 1)
    placed = col2im(cols, (n, c, *reach), (kh, kw), (s, s), (0, 0), tap_step)  # (N, C, *reach)
    padded = np.zeros((n, c, h + 2 * padding, w + 2 * padding))  # reach fits inside
    padded[:, :, : reach[0], : reach[1]] = placed
    return padded[:, :, padding : padding + h, padding : padding + w].copy()


def dilation_ignored(cols, x_shape, kh, kw, stride, padding, dilation):
    return col2im_taps_spaced(cols, x_shape, kh, kw, stride, padding, dilation, (1, 1))


def dilation_on_rows_only(cols, x_shape, kh, kw, stride, padding, dilation):
    return col2im_taps_spaced(cols, x_shape, kh, kw, stride, padding, dilation, (dilation, 1))


def dilated_assigned(last_offset_first: bool):
    """The dilated col2im with `=` for `+=`, in the offsets' order or the windows' (the
    convolution exercise's overwriting col2im, on npcbam's dilated col2im)."""

    def wrong(cols, x_shape, kh, kw, stride, padding, dilation):
        return col2im_overwriting(
            cols,
            tuple(x_shape),
            (kh, kw),
            (stride, stride),
            (padding, padding),
            last_offset_first,
            col2im,
            (dilation, dilation),
        )

    return wrong


DILATED_ASSIGN_TEXT = (
    "where dilated windows overlap (stride < dilated span d(k − 1) + 1) a pixel belongs to "
    "several columns and receives their sum"
)

DILATED_COL2IM = Exercise(
    name="dilated_col2im",
    title="col2im with dilation: taps d pixels apart",
    points=2,
    notebook=NOTEBOOK,
    reading="09_attention_family.ipynb §3",
    theory="docs/theory/bam.md",
    parts=(
        Part(
            "dilated_col2im",
            "dilated_col2im(cols, x_shape, kh, kw, stride, padding, dilation) -> x",
            (("x", "x"),),
            dilated_col2im_reference,
            dilated_col2im_cases,
            (
                Misconception(
                    "dilation_ignored",
                    "your col2im places tap (u, v) at offset (u, v) of its window: with "
                    "dilation d it sits at (d·u, d·v), so window (i, j)'s tap reaches row "
                    "s·i + d·u − p, column s·j + d·v − p",
                    variant=dilation_ignored,
                ),
                Misconception(
                    "dilation_on_rows_only",
                    "your col2im dilates the rows but not the columns: tap (u, v) sits at "
                    "(d·u, d·v), the dilation applies to both kernel axes",
                    variant=dilation_on_rows_only,
                ),
                Misconception(
                    "dilated_col2im_assign_by_window",
                    "your x writes each window's patch with `=` (a loop over the windows): "
                    + DILATED_ASSIGN_TEXT,
                    variant=dilated_assigned(last_offset_first=True),
                ),
                Misconception(
                    "dilated_col2im_assign_by_offset",
                    "your x adds each kernel offset's slice with `=` instead of `+=`: "
                    + DILATED_ASSIGN_TEXT,
                    variant=dilated_assigned(last_offset_first=False),
                ),
            ),
        ),
    ),
)

EXERCISES = (ECA_CONV1D, BATCHNORM1D, BAM_GATE, DILATED_COL2IM)
