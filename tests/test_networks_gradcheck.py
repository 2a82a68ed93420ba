"""Finite-difference checks of the seed's networks (float64), in training and evaluation mode.

ConvCBAM and ResidualBlockCBAM are checked on every element; ResnetFPN4CBAM, with thousands of
parameters, on randomly sampled elements of every tensor (one coordinate moves at a time).
BatchNorm's affine parameters and running statistics are drawn at random: with the defaults
(weight 1, bias 0) every channel of a train-mode BatchNorm output has the same values, and the
channel max of CBAM would meet exact ties everywhere. In training mode the batch statistics are
part of the function being differentiated.

Deep networks have hundreds of ReLUs and maxes; a coordinate whose finite-difference stencil
crosses one is flagged by the checker and not compared (never absorbed by a tolerance). A draw
in which some tensor had *no* comparable coordinate is rejected with ``assume``; otherwise at
most a quarter of the coordinates may be flagged, and every compared one must pass.
"""

import numpy as np
from helpers import MAX_REL_ERR, MIN_BATCH_STD, distinct_values, seeds, smallest_batch_std
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import npcbam
from npcbam.gradcheck import randomize_batchnorms

MODES = st.sampled_from(["train", "eval"])


def check_network(module, x, network_mode, seed, **settings_):
    module.train(network_mode == "train")
    module.forward(x)
    assume(smallest_batch_std(module) >= MIN_BATCH_STD)  # no steep BatchNorm: see helpers
    report = npcbam.check_gradients(module, x, seed=seed, **settings_)
    assume(all(row.checked for row in report.rows))  # every tensor compared somewhere
    total = sum(row.checked + row.kinks for row in report.rows)
    assert report.kinks <= total / 4, str(report)
    assert report.passed, str(report)
    assert report.max_rel_err <= MAX_REL_ERR, str(report)
    return report


@given(
    in_channels=st.integers(1, 4),
    out_channels=st.integers(1, 6),
    r=st.sampled_from([0.25, 0.5, 1.0]),
    shape=st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5)),
    mode=MODES,
    seed=seeds,
)
@example(in_channels=3, out_channels=6, r=0.5, shape=(2, 5, 4), mode="train", seed=0)
@example(in_channels=4, out_channels=4, r=0.25, shape=(1, 1, 1), mode="eval", seed=1)
def test_conv_cbam_gradients(in_channels, out_channels, r, shape, mode, seed):
    """Seed code 2, including in_channels != out_channels (the seed itself fails there)."""
    assume(int(out_channels * r) >= 1)
    n, h, w = shape
    rng = np.random.default_rng(seed)
    module = npcbam.ConvCBAM(in_channels, out_channels, r, seed=rng)
    x = distinct_values(rng, (n, in_channels, h, w))
    report = check_network(module, x, mode, seed)
    assert [row.name for row in report.rows] == ["input", *module.state_dict()]


@settings(max_examples=10)
@given(
    channels=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.integers(1, 2),
    kernel=st.sampled_from([1, 3]),
    size=st.tuples(st.integers(2, 5), st.integers(2, 5)),
    mode=MODES,
    seed=seeds,
)
@example(channels=(4, 4), stride=1, kernel=3, size=(4, 4), mode="train", seed=0)  # identity
@example(channels=(3, 4), stride=1, kernel=3, size=(3, 5), mode="train", seed=1)  # projection
@example(channels=(2, 2), stride=2, kernel=1, size=(5, 4), mode="eval", seed=2)  # projection
def test_residual_block_gradients(channels, stride, kernel, size, mode, seed):
    """Both shortcut kinds; every element of the input and of every parameter."""
    in_channels, out_channels = channels
    rng = np.random.default_rng(seed)
    module = npcbam.ResidualBlockCBAM(
        in_channels, out_channels, stride, reduction=out_channels, kernel_size=kernel, seed=rng
    )
    randomize_batchnorms(module, rng)
    x = distinct_values(rng, (2, in_channels, *size))
    report = check_network(module, x, mode, seed)
    has_projection = stride != 1 or in_channels != out_channels
    assert any(row.name.startswith("shortcut.") for row in report.rows) == has_projection


@settings(max_examples=1)  # ~5 s per draw; the two explicit examples always run
@given(
    channels=st.sampled_from([1, 2]),
    size=st.sampled_from([(8, 8), (16, 8)]),
    mode=MODES,
    seed=seeds,
)
@example(channels=2, size=(8, 16), mode="train", seed=0)
@example(channels=2, size=(8, 8), mode="eval", seed=1)
def test_resnet_fpn4_cbam_gradients(channels, size, mode, seed):
    """The whole backbone: two sampled elements of the input and of each of its parameters."""
    rng = np.random.default_rng(seed)
    module = npcbam.ResnetFPN4CBAM(channels, reduction=channels, kernel_size=3, seed=rng)
    randomize_batchnorms(module, rng)
    x = distinct_values(rng, (2, channels, *size))
    report = check_network(module, x, mode, seed, mode="sample", n_samples=2)
    assert len(report.rows) == 1 + len(module.parameters())


@settings(max_examples=5)
@given(attention=st.sampled_from(["cbam", "channel", "spatial", "none"]), mode=MODES, seed=seeds)
def test_attention_classifier_gradients(attention, mode, seed):
    """The demo classifier with each attention, on sampled elements."""
    from npcbam.nn.classifier import AttentionClassifier

    rng = np.random.default_rng(seed)
    module = AttentionClassifier(2, 3, widths=(4, 4), attention=attention, reduction=2, seed=rng)
    randomize_batchnorms(module, rng)
    x = distinct_values(rng, (3, 2, 6, 6))
    check_network(module, x, mode, seed, mode="sample", n_samples=3)
