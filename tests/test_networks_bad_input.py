"""Bad input to the seed's networks and the demo classifier: clear errors at construction and
forward time, state left as it was, and a failure deep inside a container rolled back."""

import numpy as np
import pytest

from npcbam.nn import ConvCBAM, ResidualBlockCBAM, ResnetFPN4CBAM
from npcbam.nn.batchnorm import BatchNorm2d
from npcbam.nn.classifier import AttentionClassifier


def snapshot(module):
    return module.state_dict(), {name: grad.copy() for name, grad in module.grads.items()}


def assert_unchanged(module, before):
    state, grads = before
    after_state, after_grads = snapshot(module)
    assert list(after_state) == list(state)
    for name, value in state.items():
        assert after_state[name].dtype == value.dtype, name
        np.testing.assert_array_equal(after_state[name], value, err_msg=name)
    for name, value in grads.items():
        np.testing.assert_array_equal(after_grads[name], value, err_msg=name)


def after_step(module, x, seed=0):
    """Run one forward and backward; return the upstream gradient used and the dx it gave."""
    y = module.forward(x)
    dy = np.random.default_rng(seed).standard_normal(y.shape)
    return dy, module.backward(dy)


# -- ResnetFPN4CBAM -----------------------------------------------------------------------------


@pytest.fixture
def fpn():
    return ResnetFPN4CBAM(2, reduction=2, kernel_size=3, seed=0)


@pytest.mark.parametrize("hw", [(12, 16), (16, 12), (4, 8), (8, 9)])
def test_fpn_needs_sizes_divisible_by_8(fpn, hw):
    """Refused before anything runs: the last forward's cache still serves backward."""
    x = np.random.default_rng(1).standard_normal((2, 2, 8, 8))
    dy, dx = after_step(fpn, x)
    before = snapshot(fpn)
    bad = np.zeros((2, 2, *hw))
    shape = rf"{hw[0]}x{hw[1]} \(shape \(2, 2, {hw[0]}, {hw[1]}\)\).*divisible by 8"
    for mode in (True, False):
        fpn.train(mode)
        with pytest.raises(ValueError, match=shape):
            fpn.forward(bad)
    fpn.train()
    assert_unchanged(fpn, before)
    fpn.zero_grad()
    np.testing.assert_array_equal(fpn.backward(dy), dx)


def test_fpn_single_value_per_channel_in_training_mode(fpn):
    x = np.random.default_rng(2).standard_normal((1, 2, 8, 8))
    before = snapshot(fpn)
    with pytest.raises(
        ValueError, match=r"shape \(1, 2, 8, 8\).*N\*\(H/8\)\*\(W/8\) = 1.*eval\(\)"
    ):
        fpn.forward(x)
    assert_unchanged(fpn, before)  # running statistics and num_batches_tracked included
    fpn.eval()
    assert fpn.forward(x).shape == (1, 20, 8, 8)
    assert_unchanged(fpn, before)


def test_fpn_two_values_per_channel_train():
    """The limit is exactly one value: (1, c, 16, 8) leaves 2 per channel and trains."""
    fpn = ResnetFPN4CBAM(2, reduction=2, kernel_size=3, seed=0)
    y = fpn.forward(np.random.default_rng(3).standard_normal((1, 2, 16, 8)))
    assert y.shape == (1, 20, 16, 8)
    counters = {k: v for k, v in fpn.state_dict().items() if k.endswith("num_batches_tracked")}
    assert counters and all(v == 1 for v in counters.values())


# -- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("r", "message"),
    [
        (0.2, r"int\(out_channels \* r\) = int\(4 \* 0.2\) = 0: .*use r >= 0.25"),
        (0.1, r"= 0: the shared MLP would have no hidden units"),
        (0, r"r must be a positive finite number, got 0"),
        (-0.5, r"r must be a positive finite number, got -0.5"),
        (float("nan"), r"r must be a positive finite number, got nan"),
        (True, r"r must be a positive finite number, got True"),
        ("0.5", r"r must be a positive finite number, got '0.5'"),
    ],
)
def test_conv_cbam_bad_ratio(r, message):
    with pytest.raises(ValueError, match=message):
        ConvCBAM(3, 4, r=r)


def test_conv_cbam_smallest_ratio_builds():
    module = ConvCBAM(3, 4, r=0.25)
    assert module.state_dict()["shared_mlp_cbam_1.weight"].shape == (1, 4)


def test_conv_cbam_infinite_ratio():
    """r = inf is rejected before int(out_channels * r) could overflow."""
    with pytest.raises(ValueError, match=r"r must be a positive finite number, got inf"):
        ConvCBAM(3, 4, r=float("inf"))


def test_classifier_unknown_attention_lists_the_options():
    with pytest.raises(
        ValueError,
        match=r"attention='sk'; expected one of \('cbam', 'channel', 'spatial', 'se', 'eca', "
        r"'bam', 'none'\)",
    ):
        AttentionClassifier(3, 4, widths=(4, 4), attention="sk")


def test_residual_block_unknown_attention():
    with pytest.raises(ValueError, match=r"attention='sk'; expected one of"):
        ResidualBlockCBAM(4, 4, reduction=2, attention="sk")


@pytest.mark.parametrize("attention", ["cbam", "channel", "bam"])
def test_residual_block_reduction_above_channels(attention):
    with pytest.raises(ValueError, match=r"channels // reduction = 4 // 8 = 0"):
        ResidualBlockCBAM(3, 4, reduction=8, attention=attention)


@pytest.mark.parametrize("attention", ["spatial", "none", "eca"])
def test_residual_block_reduction_unused_without_channel_attention(attention):
    block = ResidualBlockCBAM(3, 4, reduction=8, kernel_size=3, attention=attention, seed=0)
    assert block.forward(np.ones((2, 3, 4, 4))).shape == (2, 4, 4, 4)


# -- forward input ------------------------------------------------------------------------------

MODULES = {
    "conv_cbam": lambda: ConvCBAM(3, 4, r=0.5, seed=0),
    "residual": lambda: ResidualBlockCBAM(3, 4, stride=2, reduction=2, kernel_size=3, seed=0),
    "residual_identity": lambda: ResidualBlockCBAM(3, 3, reduction=1, kernel_size=3, seed=0),
}

REJECTED = [
    (np.zeros((2, 5, 6, 5)), ValueError, r"x has 5 channels \(shape \(2, 5, 6, 5\)\); .* 3"),
    (np.zeros((2, 3, 6, 5), dtype=np.int64), TypeError, r"x has dtype int64; expected float32"),
    (np.zeros((2, 3, 6, 5), dtype=np.float16), TypeError, r"dtype float16"),
    (np.zeros((3, 6, 5)), ValueError, r"\(3-D\); expected 4-D"),
    (np.zeros((2, 3, 0, 5)), ValueError, r"every dimension must be at least 1"),
]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize(
    ("bad", "error", "message"), REJECTED, ids=["channels", "int", "float16", "3-D", "empty"]
)
def test_rejected_input_leaves_the_module_as_it_was(name, mode, bad, error, message):
    module = MODULES[name]()
    module.train(mode == "train")
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 5))
    dy, dx = after_step(module, x)
    before = snapshot(module)
    with pytest.raises(error, match=message):
        module.forward(bad)
    assert_unchanged(module, before)
    # the last good forward is still the one backward differentiates
    module.zero_grad()
    np.testing.assert_array_equal(module.backward(dy), dx)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_input(name, mode, value):
    module = MODULES[name]()
    module.train(mode == "train")
    x = np.random.default_rng(5).standard_normal((2, 3, 6, 5))
    after_step(module, x)
    before = snapshot(module)
    bad = x.copy()
    bad[1, 2, 3, 4] = value
    with pytest.raises(ValueError, match=r"x holds 1 non-finite value\(s\) \(first at index"):
        module.forward(bad)
    assert_unchanged(module, before)
    # and the module works on as before
    module.forward(x)
    module.backward(np.ones(module.forward(x).shape))


# -- a failure deep inside a container ----------------------------------------------------------


class Boom(RuntimeError):
    pass


def batchnorm_states(module):
    return {
        path: {k: v.copy() for k, v in layer.buffers().items()}
        for path, layer in module.named_modules()
        if isinstance(layer, BatchNorm2d)
    }


CASES = {
    # (network, input shape, the layer that fails: every BatchNorm before it has already moved)
    "classifier": (
        lambda: AttentionClassifier(3, 4, widths=(4, 4), reduction=2, kernel_size=3, seed=0),
        (2, 3, 8, 8),
        "blocks.1.cbam.spatial_attention",
    ),
    "fpn": (
        lambda: ResnetFPN4CBAM(2, reduction=2, kernel_size=3, seed=0),
        (2, 2, 8, 8),
        "up4",
    ),
    "residual": (
        lambda: ResidualBlockCBAM(3, 4, stride=2, reduction=2, kernel_size=3, seed=0),
        (2, 3, 6, 6),
        "shortcut.1",
    ),
    "conv_cbam": (lambda: ConvCBAM(3, 4, r=0.5, seed=0), (2, 3, 5, 5), "spatial_attention"),
}


@pytest.mark.parametrize("case", CASES)
def test_failure_deep_inside_restores_buffers_and_blocks_backward(monkeypatch, case):
    build, shape, failing = CASES[case]
    module = build()
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape)
    dy, _ = after_step(module, x)
    before = snapshot(module)
    norms_before = batchnorm_states(module)
    layer = module.get_submodule(failing)
    seen = {}

    def fail(_x):
        # at this point the BatchNorms run so far have updated their running statistics
        seen["moved"] = any(
            not np.array_equal(value, norms_before[path][key])
            for path, buffers in batchnorm_states(module).items()
            for key, value in buffers.items()
        )
        raise Boom("planted failure")

    monkeypatch.setattr(layer, "_forward", fail)
    with pytest.raises(Boom, match="planted failure"):
        module.forward(2.0 * x + 1.0)
    assert seen["moved"] == bool(norms_before)  # the rollback had something to undo
    assert_unchanged(module, before)
    # layers that ran cached the failed input: backward is refused everywhere in the tree
    with pytest.raises(RuntimeError, match=r"the last forward\(\) through it failed"):
        module.backward(dy)
    for _, sub in module.named_modules():
        with pytest.raises(RuntimeError, match=r"the last forward\(\) through it failed"):
            sub.backward(np.zeros(1))
    assert_unchanged(module, before)
    # after the next successful forward, everything works again
    monkeypatch.undo()
    module.zero_grad()
    y = module.forward(x)
    dx = module.backward(np.ones_like(y))
    assert dx.shape == x.shape and np.isfinite(dx).all()
