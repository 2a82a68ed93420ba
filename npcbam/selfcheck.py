"""The suite behind ``npcbam gradcheck``: every op and every module on small kink-free inputs.

Inputs are drawn with :func:`npcbam.gradcheck.distinct_values` (no ties, wide gaps) so that no
max or ReLU switches inside the finite-difference stencil; should one switch anyway, the report
says so in its ``kinks`` column.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from npcbam import ops
from npcbam.gradcheck import (
    GradcheckReport,
    check_gradients,
    check_op_gradients,
    distinct_values,
    randomize_batchnorms,
)
from npcbam.nn import (
    BAM,
    CBAM,
    ECA,
    SE,
    BatchNorm1d,
    BatchNorm2d,
    ChannelAttention,
    Conv2d,
    ConvCBAM,
    ConvTranspose2d,
    Linear,
    ResidualBlockCBAM,
    SpatialAttention,
)
from npcbam.ops.conv_transpose import conv_transpose2d_backward, conv_transpose2d_forward
from npcbam.ops.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from npcbam.ops.norm import batch_statistics, batchnorm2d_backward, batchnorm2d_forward


def _op_cases(rng: np.random.Generator) -> Iterator[tuple[str, str, object, object, dict]]:
    """(name, title, forward, backward, inputs) for every op."""
    x = distinct_values(rng, (2, 3, 4, 5))  # (N, C, H, W), H != W
    yield "sigmoid", "sigmoid", ops.sigmoid_forward, ops.sigmoid_backward, {"z": x}
    yield "relu", "relu", ops.relu_forward, ops.relu_backward, {"z": x}
    yield (
        "global_avg_pool",
        "global_avg_pool",
        ops.global_avg_pool_forward,
        ops.global_avg_pool_backward,
        {"x": x},
    )
    yield (
        "global_max_pool",
        "global_max_pool",
        ops.global_max_pool_forward,
        ops.global_max_pool_backward,
        {"x": x},
    )
    yield (
        "channel_avg_pool",
        "channel_avg_pool",
        ops.channel_avg_pool_forward,
        ops.channel_avg_pool_backward,
        {"x": x},
    )
    yield (
        "channel_max_pool",
        "channel_max_pool",
        ops.channel_max_pool_forward,
        ops.channel_max_pool_backward,
        {"x": x},
    )
    yield (
        "linear",
        "linear",
        ops.linear_forward,
        ops.linear_backward,
        {
            "x": rng.standard_normal((3, 5)),
            "weight": rng.standard_normal((4, 5)),
            "bias": rng.standard_normal(4),
        },
    )
    yield (
        "shared_mlp",
        "shared_mlp",
        ops.shared_mlp_forward,
        ops.shared_mlp_backward,
        {
            "v": distinct_values(rng, (2, 6)),
            "w_hidden": distinct_values(rng, (3, 6)),
            "w_out": rng.standard_normal((6, 3)),
            "b_hidden": rng.standard_normal(3) / 10,
            "b_out": rng.standard_normal(6),
        },
    )
    yield (
        "gate_channel",
        "gate (N, C, 1, 1)",
        ops.gate_forward,
        ops.gate_backward,
        {"x": x, "gate": rng.uniform(0.1, 0.9, (2, 3, 1, 1))},
    )
    yield (
        "gate_spatial",
        "gate (N, 1, H, W)",
        ops.gate_forward,
        ops.gate_backward,
        {"x": x, "gate": rng.uniform(0.1, 0.9, (2, 1, 4, 5))},
    )
    yield (
        "concat",
        "concat",
        lambda a, b: ops.concat_forward([a, b], axis=1),
        ops.concat_backward,
        {"a": x[:, :1], "b": x[:, 1:]},
    )
    yield (
        "conv2d",
        "conv2d 3x3 stride 1 pad 1, bias",
        lambda x, w, b: ops.conv2d_forward(x, w, b, stride=1, padding=1),
        ops.conv2d_backward,
        {"x": x, "weight": rng.standard_normal((2, 3, 3, 3)), "bias": rng.standard_normal(2)},
    )
    yield (
        "conv2d_strided",
        "conv2d 3x2 stride 2 pad 0",
        lambda x, w: ops.conv2d_forward(x, w, stride=2, padding=0),
        lambda d, c: ops.conv2d_backward(d, c)[:2],
        {"x": x, "weight": rng.standard_normal((4, 3, 3, 2))},
    )
    yield (
        "conv_transpose2d",
        "conv_transpose2d 3x3 stride 2 pad 1 output_padding 1, bias",
        lambda x, w, b: conv_transpose2d_forward(x, w, b, stride=2, padding=1, output_padding=1),
        conv_transpose2d_backward,
        {"x": x, "weight": rng.standard_normal((3, 2, 3, 3)), "bias": rng.standard_normal(2)},
    )
    gamma, beta = 1.0 + rng.uniform(-0.3, 0.3, 3), rng.standard_normal(3)

    def batchnorm_train(x, gamma, beta):
        return batchnorm2d_forward(x, gamma, beta, *batch_statistics(x), 1e-5, True)

    yield (
        "batchnorm2d_train",
        "batchnorm2d, batch statistics",
        batchnorm_train,
        batchnorm2d_backward,
        {
            "x": x,
            "gamma": gamma,
            "beta": beta,
        },
    )
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 1.5, 3)
    yield (
        "batchnorm2d_eval",
        "batchnorm2d, running statistics",
        lambda x, gamma, beta: batchnorm2d_forward(x, gamma, beta, mean, var, 1e-5, False),
        batchnorm2d_backward,
        {"x": x, "gamma": gamma, "beta": beta},
    )
    labels = np.array([2, 0, 1, 2])
    yield (
        "softmax_cross_entropy",
        "softmax cross-entropy",
        lambda logits: softmax_cross_entropy_forward(logits, labels),
        softmax_cross_entropy_backward,
        {"logits": rng.standard_normal((4, 3))},
    )


def with_live_relus(
    module, rng: np.random.Generator, shape, first_layer=("mlp.0.weight",)
) -> np.ndarray:
    """Make every hidden unit of the shared MLP active in both branches; return the input.

    A dead ReLU hides bugs: if the max branch's hidden units are all inactive, that branch's
    gradient is zero anyway, and dropping it would go unnoticed. A positive input and a positive
    first MLP layer give positive pre-activations everywhere. ``first_layer`` names that
    layer's parameters (SE's: ``fc1.weight`` and ``fc1.bias``).
    """
    weights = module.state_dict()
    for name in first_layer:
        weights[name] = np.abs(weights[name])
    module.load_state_dict(weights)
    return 1.5 + distinct_values(rng, shape, scale=1.0)  # entries in [0.5, 2.5]


def _module_cases(rng: np.random.Generator) -> Iterator[tuple[str, object, np.ndarray]]:
    """(name, module, input) for every module: hidden width 1 and > 1, H != W, kernels 3, 5
    and 7, with live and with partly dead ReLUs; then every layer, BatchNorm in training and in
    evaluation mode, seed code 2 and the residual block with both kinds of shortcut."""
    channel = ChannelAttention(6, reduction=3, seed=rng)
    yield "ChannelAttention", channel, with_live_relus(channel, rng, (2, 6, 3, 4))
    yield (
        "ChannelAttention_hidden1",
        ChannelAttention(4, reduction=4, seed=rng),
        distinct_values(rng, (1, 4, 2, 3)),
    )
    yield "SpatialAttention", SpatialAttention(5, seed=rng), distinct_values(rng, (2, 3, 4, 6))
    cbam = CBAM(8, reduction=4, kernel_size=3, seed=rng)
    yield "CBAM", cbam, with_live_relus(cbam, rng, (2, 8, 4, 5))
    yield (
        "CBAM_kernel7",
        CBAM(4, reduction=2, kernel_size=7, seed=rng),
        distinct_values(rng, (1, 4, 6, 5)),
    )
    x = distinct_values(rng, (2, 3, 5, 4))
    yield "Conv2d", Conv2d(3, 4, 3, stride=2, padding=1, seed=rng), x
    yield (
        "ConvTranspose2d",
        ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, seed=rng),
        x,
    )
    yield "Linear", Linear(5, 3, seed=rng), distinct_values(rng, (4, 5))
    yield "BatchNorm2d", randomize_batchnorms(BatchNorm2d(3), rng), x
    yield "BatchNorm2d_eval", randomize_batchnorms(BatchNorm2d(3), rng).eval(), x
    yield "ConvCBAM", ConvCBAM(3, 4, r=0.5, seed=rng), x
    yield (
        "ResidualBlockCBAM",
        randomize_batchnorms(ResidualBlockCBAM(3, 4, reduction=2, kernel_size=3, seed=rng), rng),
        x,
    )
    block = randomize_batchnorms(ResidualBlockCBAM(3, 3, reduction=3, kernel_size=3, seed=rng), rng)
    yield "ResidualBlockCBAM_eval", block.eval(), x


def _family_op_cases(rng: np.random.Generator) -> Iterator[tuple[str, str, object, object, dict]]:
    """(name, title, forward, backward, inputs) for the ops of CBAM's family: ECA's 1-D
    convolution across channels, the dilated convolution (with stride 2, no padding, a
    non-square input and kernel) and BAM's two ways of combining its maps."""
    yield (
        "conv1d_channels",
        "conv1d_channels k=3",
        ops.conv1d_channels_forward,
        ops.conv1d_channels_backward,
        {"v": distinct_values(rng, (2, 7)), "weight": rng.standard_normal(3)},
    )
    yield (
        "conv2d_dilated",
        "conv2d 3x2 dilation 2 stride 2 pad 0, bias",
        lambda x, w, b: ops.conv2d_forward(x, w, b, stride=2, padding=0, dilation=2),
        ops.conv2d_backward,
        {
            "x": distinct_values(rng, (2, 3, 7, 9)),
            "weight": rng.standard_normal((2, 3, 3, 2)),
            "bias": rng.standard_normal(2),
        },
    )
    maps = {"a": rng.standard_normal((2, 3, 1, 1)), "b": rng.standard_normal((2, 1, 4, 5))}
    for combine in ("add", "multiply"):
        yield (
            f"broadcast_{combine}",
            f"broadcast_{combine} (N, C, 1, 1) with (N, 1, H, W)",
            getattr(ops, f"broadcast_{combine}_forward"),
            getattr(ops, f"broadcast_{combine}_backward"),
            maps,
        )


def _family_module_cases(rng: np.random.Generator) -> Iterator[tuple[str, object, np.ndarray]]:
    """(name, module, input) for CBAM's family: SE with live ReLUs, ECA with the adaptive and
    a larger kernel, BatchNorm1d and BAM in both gate forms, in training and evaluation mode
    (random BatchNorm states; four images, H != W)."""
    se = SE(6, reduction=2, seed=rng)
    yield "SE", se, with_live_relus(se, rng, (2, 6, 3, 4), ("fc1.weight", "fc1.bias"))
    yield "ECA", ECA(8, seed=rng), distinct_values(rng, (2, 8, 3, 4))
    yield "ECA_kernel5", ECA(6, kernel_size=5, seed=rng), distinct_values(rng, (2, 6, 4, 3))
    vectors = distinct_values(rng, (4, 3))
    yield "BatchNorm1d", randomize_batchnorms(BatchNorm1d(3), rng), vectors
    yield "BatchNorm1d_eval", randomize_batchnorms(BatchNorm1d(3), rng).eval(), vectors
    x = distinct_values(rng, (4, 4, 5, 6))
    for gate, suffix in (("paper", ""), ("official", "_official")):
        for mode in ("train", "eval"):
            bam = randomize_batchnorms(BAM(4, reduction=2, gate=gate, dilation=2, seed=rng), rng)
            yield f"BAM{suffix}{'_eval' if mode == 'eval' else ''}", bam.train(mode == "train"), x


def _checks(seed: int) -> dict[str, Callable[[], GradcheckReport]]:
    """Every check by name, in the suite's order; each runs when called. All cases are drawn
    first, so a check's inputs are the same whichever checks run; CBAM's family draws from a
    generator of its own, so adding it left the other checks' inputs as they were."""
    rng, family_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    checks: dict[str, Callable[[], GradcheckReport]] = {}
    op_cases = [*_op_cases(rng), *_family_op_cases(family_rng)]
    for name, title, forward, backward, inputs in op_cases:
        checks[name] = functools.partial(
            check_op_gradients, forward, backward, inputs, title=title, seed=seed
        )
    for name, module, x in [*_module_cases(rng), *_family_module_cases(family_rng)]:
        checks[name] = functools.partial(check_gradients, module, x, seed=seed)
    return checks


def check_names() -> list[str]:
    """The names of the checks :func:`run_checks` runs (``npcbam gradcheck --only NAME``)."""
    return list(_checks(0))


def run_checks(
    seed: int = 0, only: Sequence[str] | None = None
) -> list[tuple[str, GradcheckReport]]:
    """Run the named checks (all when ``only`` is None), in the suite's order; (name, report)
    for each. An unknown name raises ``ValueError`` listing the valid ones."""
    checks = _checks(seed)
    if only is not None:
        unknown = [name for name in only if name not in checks]
        if unknown or not only:
            raise ValueError(
                f"unknown check name(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"valid names: {', '.join(checks)}"
            )
    return [(name, run()) for name, run in checks.items() if only is None or name in only]


def run_all(seed: int = 0) -> list[GradcheckReport]:
    """Gradient-check every op and module; one report each, in a fixed order."""
    return [report for _, report in run_checks(seed)]
