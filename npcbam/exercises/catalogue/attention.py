"""Exercises of reading notebooks 5 to 7: gating, concatenation, the two attention modules
and CBAM end to end.

The references are npcbam's modules themselves (:class:`~npcbam.nn.ChannelAttention`,
:class:`~npcbam.nn.SpatialAttention`, :class:`~npcbam.nn.CBAM`), loaded with the case's
weights. Their misconceptions are the modules with one op replaced while they run
(:mod:`npcbam.exercises.planting`), so each mistake is written once, as the wrong op.
"""

from __future__ import annotations

import numpy as np

from npcbam.exercises.catalogue.cases import draw_until, shape_label, top2_gap, upstream, values
from npcbam.exercises.catalogue.cases import weights as draw_weights
from npcbam.exercises.catalogue.pooling import (
    CHANNEL_AVG_BY_HW,
    CHANNEL_AVG_MISSING_SCALE,
    GLOBAL_AVG_MISSING_SCALE,
    skipped_backward,
)
from npcbam.exercises.registry import Case, Exercise, Misconception, Part
from npcbam.nn.cbam import CBAM
from npcbam.nn.channel_attention import ChannelAttention
from npcbam.nn.spatial_attention import SpatialAttention
from npcbam.ops.gating import concat_backward, concat_forward, gate_backward, gate_forward
from npcbam.ops.pooling import global_avg_pool_backward

# -- gate and concat ---------------------------------------------------------------------------


def gate_reference(dy, x, g):
    _, cache = gate_forward(x, g)
    return gate_backward(dy, cache)


def concat_reference(ds):
    n, _, h, w = ds.shape
    _, cache = concat_forward([np.zeros((n, 1, h, w)), np.zeros((n, 1, h, w))], axis=1)
    ds_max, ds_mean = concat_backward(ds, cache)
    return ds_max, ds_mean


def broadcast_axes(g, x):
    return tuple(i for i, (a, b) in enumerate(zip(g.shape, x.shape)) if a == 1 and b != 1)


def gate_cases(rng):
    cases = []
    for n, c, h, w, kind in (
        (2, 3, 4, 5, "channel"),
        (2, 3, 4, 5, "spatial"),
        (1, 4, 3, 2, "spatial"),
        (3, 2, 2, 3, "channel"),
    ):
        g_shape = (n, c, 1, 1) if kind == "channel" else (n, 1, h, w)
        args = (upstream(rng, (n, c, h, w)), values(rng, (n, c, h, w)), values(rng, g_shape, 1.0))
        cases.append(
            Case(f"{shape_label(N=n, C=c, H=h, W=w)}, a {kind} gate of shape {g_shape}", args)
        )
    return cases


def gate_not_reduced(dy, x, g):
    dx, _ = gate_reference(dy, x, g)
    return dx, dy * x


def gate_summed_over_batch_too(dy, x, g):
    dx, _ = gate_reference(dy, x, g)
    return dx, (dy * x).sum(axis=(0, *broadcast_axes(g, x)), keepdims=True)


def gate_summed_over_wrong_axes(dy, x, g):
    dx, _ = gate_reference(dy, x, g)
    kept = broadcast_axes(g, x)
    wrong = tuple(i for i in range(1, x.ndim) if i not in kept)  # the axes g does NOT span
    return dx, (dy * x).sum(axis=wrong, keepdims=True)


def gate_factors_swapped(dy, x, g):
    return dy * x, (dy * g).sum(axis=broadcast_axes(g, x), keepdims=True)


def gate_without_gate_factor(dy, x, g):
    _, dg = gate_reference(dy, x, g)
    return dy.copy(), dg


def gate_without_x_term(dout, cache, original, **options):
    """The gate's backward with x̄'s term from the gate (ȳ ⊙ g) missing."""
    dx, dgate = original(dout, cache, **options)
    return np.zeros_like(dx), dgate


def concat_swapped(dout, cache, original):
    return original(dout, cache)[::-1]


GATE = Exercise(
    name="gate",
    title="Gate backward: the product rule and the broadcast sum",
    points=2,
    notebook="ex05_channel_attention",
    reading="05_channel_attention.ipynb §2",
    theory="docs/theory/gating.md",
    parts=(
        Part(
            "gate_backward",
            "gate_backward(dy, x, g) -> (dx, dg)",
            (("dx", "x̄"), ("dg", "ḡ")),
            gate_reference,
            gate_cases,
            (
                Misconception(
                    "gate_grad_not_reduced",
                    "your ḡ is ȳ ⊙ x at full size: g was broadcast in the forward, so its "
                    "gradient is summed over the broadcast axes, back to g's shape",
                    variant=gate_not_reduced,
                ),
                Misconception(
                    "gate_grad_summed_over_batch",
                    "your ḡ is also summed over the batch: every image has its own gate, so "
                    "sum over the broadcast axes only, never over N",
                    variant=gate_summed_over_batch_too,
                ),
                Misconception(
                    "gate_grad_wrong_axes",
                    "your ḡ is summed over the wrong axes: sum over the axes along which g was "
                    "broadcast (H, W for a channel gate (N, C, 1, 1); C for a spatial gate "
                    "(N, 1, H, W))",
                    variant=gate_summed_over_wrong_axes,
                ),
                Misconception(
                    "gate_factors_swapped",
                    "your x̄ and ḡ have their factors swapped: by the product rule each "
                    "factor's gradient is ȳ times the OTHER factor (x̄ = ȳ ⊙ g, ḡ = Σ ȳ ⊙ x)",
                    variant=gate_factors_swapped,
                ),
                Misconception(
                    "gate_dx_without_gate",
                    "your x̄ is ȳ: it must be multiplied by the gate, x̄ = ȳ ⊙ g",
                    variant=gate_without_gate_factor,
                ),
            ),
        ),
    ),
)

CONCAT = Exercise(
    name="concat",
    title="Concatenation backward",
    points=1,
    notebook="ex06_spatial_attention",
    reading="06_spatial_attention.ipynb §3",
    theory="docs/theory/gating.md",
    parts=(
        Part(
            "concat_backward",
            "concat_backward(ds) -> (ds_max, ds_mean)",
            (("ds_max", "s̄^max"), ("ds_mean", "s̄^avg")),
            concat_reference,
            lambda rng: [
                Case(shape_label(N=n, H=h, W=w), (upstream(rng, (n, 2, h, w)),))
                for n, h, w in ((2, 4, 5), (1, 1, 1), (3, 2, 3))
            ],
            (
                Misconception(
                    "concat_swapped",
                    "your two gradients are swapped: the max map is channel 0 of s, the mean "
                    "map channel 1, and each gets back its own slice",
                    plants=lambda: {"concat_backward": concat_swapped},
                ),
            ),
        ),
    ),
)

# -- channel attention -------------------------------------------------------------------------


def channel_attention_module(x, w0, w1) -> ChannelAttention:
    hidden, channels = w0.shape
    module = ChannelAttention(channels, hidden=hidden, conv_shaped=False, seed=0)
    module.load_state_dict({"mlp.0.weight": w0, "mlp.2.weight": w1})
    return module


def channel_attention_reference(dy, x, w0, w1):
    module = channel_attention_module(x, w0, w1)
    module.forward(x)
    dx = module.backward(dy)
    grads = module.grads
    return dx, grads["mlp.0.weight"].copy(), grads["mlp.2.weight"].copy()


def relu_inputs(x, w0):
    """The shared MLP's pre-activations on both pooled vectors, (2N, C/r)."""
    n, c = x.shape[:2]
    pooled = np.concatenate([x.mean(axis=(2, 3)), x.reshape(n, c, -1).max(axis=2)])
    return pooled @ w0.T


def relu_ok(x, w0) -> bool:
    pre = relu_inputs(x, w0)
    return np.abs(pre).min() > 1e-3 and (pre > 0).any() and (pre < 0).any()


def channel_attention_case(rng, n, c, h, w, hidden):
    def draw(rng):
        x = values(rng, (n, c, h, w))
        return (
            upstream(rng, x.shape),
            x,
            draw_weights(rng, (hidden, c)),
            draw_weights(rng, (c, hidden)),
        )

    def acceptable(args):
        _, x, w0, _ = args
        return top2_gap(x, (2, 3)) > 1e-3 and relu_ok(x, w0)

    return Case(shape_label(N=n, C=c, H=h, W=w, hidden=hidden), draw_until(rng, draw, acceptable))


def drop_one_use_weights(which: int):
    """A shared_mlp_backward whose ``which``-th call (0: the average pool's use, 1: the max
    pool's) returns zero weight gradients: that use's `+=` was an `=` or was left out."""
    calls = []

    def backward(dout, cache, original):
        dv, dw_hidden, dw_out, db_hidden, db_out = original(dout, cache)
        calls.append(None)
        if len(calls) - 1 == which:
            return dv, np.zeros_like(dw_hidden), np.zeros_like(dw_out), db_hidden, db_out
        return dv, dw_hidden, dw_out, db_hidden, db_out

    return {"shared_mlp_backward": backward}


def max_routed_as_average(dout, cache, add_to=None):
    """The max branch's gradient spread like an average's (copied from the avg branch)."""
    return global_avg_pool_backward(dout, cache, add_to)


SIGMOID_SQUARED = Misconception(
    "sigmoid_squared",
    "your sigmoid's derivative is σ² instead of σ(1 − σ)",
    plants=lambda: {"sigmoid_backward": lambda dout, cache: dout * cache.out * cache.out},
)
GATE_X_TERM_MISSING = {"gate_backward": gate_without_x_term}
MAX_BRANCH_DROPPED = Misconception(
    "mlp_max_use_dropped",
    "your W̄₀ and W̄₁ hold only the average-pool use of the shared MLP: the max-pool use's "
    "weight gradient was dropped (`=` where `+=` belongs); the weights are shared, so their "
    "gradient is the sum over both uses",
    plants=lambda: drop_one_use_weights(1),
)

CHANNEL_ATTENTION = Exercise(
    name="channel_attention",
    title="Channel attention backward",
    points=3,
    notebook="ex05_channel_attention",
    reading="05_channel_attention.ipynb §2 and §5",
    theory="docs/theory/channel-attention.md",
    parts=(
        Part(
            "channel_attention_backward",
            "channel_attention_backward(dy, x, w0, w1) -> (dx, dw0, dw1)",
            (("dx", "x̄"), ("dw0", "W̄₀"), ("dw1", "W̄₁")),
            channel_attention_reference,
            lambda rng: [
                channel_attention_case(rng, 2, 8, 5, 4, 2),
                channel_attention_case(rng, 1, 4, 3, 3, 1),  # C = r: hidden width 1
                channel_attention_case(rng, 3, 6, 2, 5, 3),
            ],
            (
                MAX_BRANCH_DROPPED,
                Misconception(
                    "mlp_avg_use_overwritten",
                    "your W̄₀ and W̄₁ hold only the max-pool use of the shared MLP: the "
                    "average-pool use's gradient was overwritten (`=` where `+=` belongs)",
                    plants=lambda: drop_one_use_weights(0),
                ),
                Misconception(
                    "channel_avg_avg",
                    "your x̄ routes the max branch's gradient like the average's (avg + avg "
                    "instead of avg + max): the max pool sends it to each channel's maximum",
                    plants=lambda: {"global_max_pool_backward": max_routed_as_average},
                ),
                Misconception(
                    "channel_gate_use_dropped",
                    "one of the three uses of x is missing from x̄: the gate's, ȳ ⊙ M_c "
                    "(x̄ is the sum of the gate's, the average pool's and the max pool's terms)",
                    plants=lambda: GATE_X_TERM_MISSING,
                ),
                Misconception(
                    "channel_avg_use_dropped",
                    "one of the three uses of x is missing from x̄: the average pool's, "
                    "ā / (H·W) at every position",
                    plants=lambda: {"global_avg_pool_backward": skipped_backward},
                ),
                Misconception(
                    "channel_max_use_dropped",
                    "one of the three uses of x is missing from x̄: the max pool's, m̄ at "
                    "each channel's maximum",
                    plants=lambda: {"global_max_pool_backward": skipped_backward},
                ),
                SIGMOID_SQUARED,
                GLOBAL_AVG_MISSING_SCALE,
            ),
        ),
    ),
)

# -- spatial attention -------------------------------------------------------------------------


def spatial_attention_reference(dy, x, w):
    module = SpatialAttention(w.shape[-1], seed=0)
    module.load_state_dict({"conv.weight": w})
    module.forward(x)
    dx = module.backward(dy)
    return dx, module.grads["conv.weight"].copy()


def spatial_attention_case(rng, n, c, h, w, k):
    def draw(rng):
        x = values(rng, (n, c, h, w))
        return upstream(rng, x.shape), x, draw_weights(rng, (1, 2, k, k))

    args = draw_until(rng, draw, lambda args: top2_gap(args[1], (1,)) > 1e-3)
    return Case(shape_label(N=n, C=c, H=h, W=w, k=k), args)


def conv_backward_unflipped(dout, cache, original):
    """x̄ computed with the kernel not flipped (W̄ and b̄ right)."""
    dx, _, _ = original(dout, cache._replace(weight=cache.weight[:, :, ::-1, ::-1]))
    _, dweight, dbias = original(dout, cache)
    return dx, dweight, dbias


CONCAT_SWAPPED_IN_MODULE = Misconception(
    "spatial_concat_swapped",
    "your x̄ and W̄ come from the pooled maps' gradients swapped: channel 0 of the "
    "concatenation is the max over channels, channel 1 the mean",
    plants=lambda: {"concat_backward": concat_swapped},
)

SPATIAL_ATTENTION = Exercise(
    name="spatial_attention",
    title="Spatial attention backward",
    points=3,
    notebook="ex06_spatial_attention",
    reading="06_spatial_attention.ipynb §3",
    theory="docs/theory/spatial-attention.md",
    parts=(
        Part(
            "spatial_attention_backward",
            "spatial_attention_backward(dy, x, w) -> (dx, dw)",
            (("dx", "x̄"), ("dw", "W̄")),
            spatial_attention_reference,
            lambda rng: [
                spatial_attention_case(rng, 2, 4, 5, 6, 3),
                spatial_attention_case(rng, 1, 3, 4, 4, 7),
                spatial_attention_case(rng, 2, 5, 1, 1, 3),  # H = W = 1
            ],
            (
                CONCAT_SWAPPED_IN_MODULE,
                Misconception(
                    "spatial_mean_divided_by_hw",
                    "your x̄ divides the channel mean's gradient by H·W; the mean is over the "
                    "C channels: x̄ += s̄ / C",
                    plants=CHANNEL_AVG_BY_HW.plants,
                ),
                Misconception(
                    "spatial_mean_missing_scale",
                    "your x̄ misses the 1/C of the mean over channels",
                    plants=CHANNEL_AVG_MISSING_SCALE.plants,
                ),
                Misconception(
                    "spatial_gate_use_dropped",
                    "one of the uses of x is missing from x̄: the gate's, ȳ ⊙ M_s",
                    plants=lambda: GATE_X_TERM_MISSING,
                ),
                Misconception(
                    "spatial_max_use_dropped",
                    "one of the uses of x is missing from x̄: the max over channels' (s̄^max at "
                    "each position's largest channel)",
                    plants=lambda: {"channel_max_pool_backward": skipped_backward},
                ),
                Misconception(
                    "spatial_kernel_not_flipped",
                    "your x̄ goes back through the k×k convolution with the kernel not "
                    "flipped: as a convolution, the input's gradient uses W[:, :, ::-1, ::-1]",
                    plants=lambda: {"conv2d_backward": conv_backward_unflipped},
                ),
                SIGMOID_SQUARED,
            ),
        ),
    ),
)

# -- CBAM --------------------------------------------------------------------------------------


def cbam_module(w0, w1, w_conv) -> CBAM:
    hidden, channels = w0.shape
    module = CBAM(channels, reduction=channels // hidden, kernel_size=w_conv.shape[-1], seed=0)
    module.load_state_dict(
        {
            "mlp.0.weight": w0.reshape(hidden, channels, 1, 1),
            "mlp.2.weight": w1.reshape(channels, hidden, 1, 1),
            "conv.weight": w_conv,
        }
    )
    return module


def cbam_reference(dy, x, w0, w1, w_conv):
    module = cbam_module(w0, w1, w_conv)
    module.forward(x)
    dx = module.backward(dy)
    grads = module.grads
    return (
        dx,
        grads["mlp.0.weight"].reshape(w0.shape).copy(),
        grads["mlp.2.weight"].reshape(w1.shape).copy(),
        grads["conv.weight"].copy(),
    )


def cbam_case(rng, n, c, h, w, hidden, k):
    def draw(rng):
        x = values(rng, (n, c, h, w))
        w0, w1 = draw_weights(rng, (hidden, c)), draw_weights(rng, (c, hidden))
        return upstream(rng, x.shape), x, w0, w1, draw_weights(rng, (1, 2, k, k))

    def acceptable(args):
        _, x, w0, w1, _ = args
        if not (top2_gap(x, (2, 3)) > 1e-3 and relu_ok(x, w0)):
            return False
        module = channel_attention_module(x, w0, w1)
        refined = module.forward(x)  # F', what the spatial attention maxes over channels
        return top2_gap(refined, (1,)) > 1e-3

    args = draw_until(rng, draw, acceptable)
    return Case(shape_label(N=n, C=c, H=h, W=w, hidden=hidden, k=k), args)


POOLS_SKIPPED = {
    "global_avg_pool_backward": skipped_backward,
    "global_max_pool_backward": skipped_backward,
    "channel_avg_pool_backward": skipped_backward,
    "channel_max_pool_backward": skipped_backward,
}

CBAM_EXERCISE = Exercise(
    name="cbam",
    title="CBAM backward, end to end",
    points=3,
    notebook="ex07_cbam_end_to_end",
    reading="07_cbam_end_to_end.ipynb §2 and §4",
    theory="docs/theory/cbam.md",
    parts=(
        Part(
            "cbam_backward",
            "cbam_backward(dy, x, w0, w1, w_conv) -> (dx, dw0, dw1, dw_conv)",
            (("dx", "x̄"), ("dw0", "W̄₀"), ("dw1", "W̄₁"), ("dw_conv", "W̄")),
            cbam_reference,
            lambda rng: [
                cbam_case(rng, 2, 8, 5, 4, 2, 3),
                cbam_case(rng, 1, 4, 4, 3, 1, 3),  # C = r
                cbam_case(rng, 2, 6, 3, 3, 3, 7),
            ],
            (
                Misconception(
                    "cbam_maps_constant",
                    "your x̄ treats both attention maps as constants: at each gate the "
                    "product rule's second term (back through M_c and M_s to their inputs) is "
                    "missing",
                    plants=lambda: POOLS_SKIPPED,
                ),
                Misconception(
                    "cbam_spatial_map_constant",
                    "your x̄ treats the spatial map M_s as a constant: the product rule's "
                    "second term at the spatial gate (through the max and mean over channels "
                    "back to F') is missing",
                    plants=lambda: {
                        k: v for k, v in POOLS_SKIPPED.items() if k.startswith("channel")
                    },
                ),
                Misconception(
                    "cbam_channel_map_constant",
                    "your x̄ treats the channel map M_c as a constant: the product rule's "
                    "second term at the channel gate (through the poolings back to F) is "
                    "missing",
                    plants=lambda: {
                        k: v for k, v in POOLS_SKIPPED.items() if k.startswith("global")
                    },
                ),
                Misconception(
                    "cbam_gate_terms_missing",
                    "your x̄ misses the product rule's first term at the gates: F̄ gets "
                    "F̄' ⊙ M_c and F̄' gets F̄'' ⊙ M_s",
                    plants=lambda: GATE_X_TERM_MISSING,
                ),
                MAX_BRANCH_DROPPED,
                CONCAT_SWAPPED_IN_MODULE,
                SIGMOID_SQUARED,
            ),
        ),
    ),
)

EXERCISES = (GATE, CHANNEL_ATTENTION, CONCAT, SPATIAL_ATTENTION, CBAM_EXERCISE)
