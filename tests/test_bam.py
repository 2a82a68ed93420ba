"""BAM: finite differences (float64, input and every parameter, both gate forms, training and
evaluation mode, random BatchNorm states, edge shapes), the forward written out by hand from
the loop oracles, the official state-dict keys, float32, bad input that leaves the module
unchanged, the broadcast ops, and planted backward bugs that the gradient check must catch.
PyTorch parity: tests/test_parity_bam.py (stored) and tests/test_parity_bam_live.py."""

import math

import numpy as np
import pytest
from helpers import EXACT, SAFE_MARGIN, assert_gradients_match, relative_error, seeds
from hypothesis import assume, example, given
from hypothesis import strategies as st
from parity.bam_keys import BIASES_BEFORE_BATCHNORM

import npcbam
import npcbam.ops.broadcast as broadcast_module
from npcbam import check_op_gradients
from npcbam.gradcheck import randomize_batchnorms
from npcbam.nn.batchnorm import BatchNorm1d, BatchNorm2d
from npcbam.ops import (
    broadcast_add_backward,
    broadcast_add_forward,
    broadcast_multiply_backward,
    broadcast_multiply_forward,
)
from npcbam.ops.reference import conv2d_naive
from npcbam.testing import assert_module_gradients

GATES = ("paper", "official")
MODES = ("train", "eval")
# smallest standard deviation of a train-mode BatchNorm's batch in a finite-difference test:
# over a few nearly equal values BatchNorm is smooth but steep (its k-th derivative grows like
# 1/std^k, the order-4 difference's error like h^4/std^5); such inputs are kept out, like kinks
MIN_BATCH_STD = 0.05

# the official module's keys (MODELS/bam.py of Jongchan/attention-module), in its order
BATCHNORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
OFFICIAL_KEYS = [
    "channel_att.gate_c.gate_c_fc_0.weight",
    "channel_att.gate_c.gate_c_fc_0.bias",
    *(f"channel_att.gate_c.gate_c_bn_1.{name}" for name in BATCHNORM),
    "channel_att.gate_c.gate_c_fc_final.weight",
    "channel_att.gate_c.gate_c_fc_final.bias",
    "spatial_att.gate_s.gate_s_conv_reduce0.weight",
    "spatial_att.gate_s.gate_s_conv_reduce0.bias",
    *(f"spatial_att.gate_s.gate_s_bn_reduce0.{name}" for name in BATCHNORM),
    "spatial_att.gate_s.gate_s_conv_di_0.weight",
    "spatial_att.gate_s.gate_s_conv_di_0.bias",
    *(f"spatial_att.gate_s.gate_s_bn_di_0.{name}" for name in BATCHNORM),
    "spatial_att.gate_s.gate_s_conv_di_1.weight",
    "spatial_att.gate_s.gate_s_conv_di_1.bias",
    *(f"spatial_att.gate_s.gate_s_bn_di_1.{name}" for name in BATCHNORM),
    "spatial_att.gate_s.gate_s_conv_final.weight",
    "spatial_att.gate_s.gate_s_conv_final.bias",
]


def batchnorms(module):
    return [m for _, m in module.named_modules() if isinstance(m, (BatchNorm1d, BatchNorm2d))]


def margins(module, x) -> tuple[float, float]:
    """(smallest |input| of any ReLU, smallest batch standard deviation of a train-mode
    BatchNorm) at ``x``. Every BatchNorm of BAM feeds a ReLU, so the ReLU inputs are the
    BatchNorms' outputs (kept with ``retain_io`` during one forward)."""
    layers = batchnorms(module)
    for layer in layers:
        layer.retain_io()
    module.forward(x)
    relu = min(float(np.abs(layer.retained["output"]).min()) for layer in layers)
    for layer in layers:
        layer.retain_io(False)
    if not module.training:
        return relu, math.inf
    return relu, min(1 / float(layer._cache.inv_std.max()) for layer in layers)


def make_bam(seed, channels, reduction, shape, gate, mode, dilation=4):
    """A BAM with random weights and BatchNorm states, in ``mode``, an input of ``shape``
    (N, H, W), and whether the input keeps every ReLU input SAFE_MARGIN from 0 and (training)
    every BatchNorm batch spread by MIN_BATCH_STD."""
    rng = np.random.default_rng((seed, 1))  # not the checker's default_rng(seed)
    module = npcbam.BAM(channels, reduction, seed=rng, gate=gate, dilation=dilation)
    randomize_batchnorms(module, rng).train(mode == "train")
    x = rng.standard_normal((shape[0], channels, *shape[1:]))
    relu, spread = margins(module, x)
    return module, x, relu >= SAFE_MARGIN and spread >= MIN_BATCH_STD


def bam_case(*args, **kwargs):
    """:func:`make_bam`, for hypothesis: inputs near a kink or a steep BatchNorm are set aside."""
    module, x, safe = make_bam(*args, **kwargs)
    assume(safe)
    return module, x


# -- finite differences -------------------------------------------------------------------------
@given(
    gate=st.sampled_from(GATES),
    mode=st.sampled_from(MODES),
    c_r=st.sampled_from([(2, 2), (4, 2), (4, 4), (6, 3), (6, 2)]),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
    dilation=st.sampled_from([1, 2, 4]),
    seed=seeds,
)
@example(gate="paper", mode="train", c_r=(4, 2), shape=(2, 4, 3), dilation=4, seed=0)
@example(gate="official", mode="train", c_r=(4, 2), shape=(2, 3, 5), dilation=4, seed=0)
@example(gate="paper", mode="eval", c_r=(2, 2), shape=(1, 1, 1), dilation=4, seed=1)  # C = r
@example(gate="official", mode="eval", c_r=(6, 3), shape=(1, 5, 2), dilation=4, seed=2)
def test_bam_gradients(gate, mode, c_r, shape, dilation, seed):
    """Input and every parameter, both gate forms, training (batch statistics) and evaluation
    (running statistics) mode, N = 1 (eval), H = W = 1, H != W, C = r, dilations 1, 2, 4."""
    if mode == "train":
        assume(shape[0] >= 2)
    module, x = bam_case(seed, *c_r, shape, gate, mode, dilation)
    report = assert_module_gradients(module, x, seed=seed)
    assert [row.name for row in report.rows] == ["input", *module.parameters()]


def test_bam_at_a_realistic_width_in_random_direction_mode():
    """C = 64, r = 16 (hidden width 4), 3×3 maps, N = 4: the random-direction mode, both
    forms (small maps: the more ReLU inputs, the likelier one is near 0)."""
    for gate in GATES:
        module, x, safe = make_bam(14, 64, 16, (4, 3, 3), gate, "train")
        assert safe, "pick another seed"
        report = npcbam.check_gradients(module, x, mode="random", n_directions=6, seed=3)
        assert_gradients_match(report)


# -- what BAM computes --------------------------------------------------------------------------
def batchnorm_by_hand(x, layer, axes):
    """BatchNorm from its definition, with the batch's (training) or running statistics."""
    state = layer.state_dict()
    shape = [1] * x.ndim
    shape[1] = -1
    if layer.training:
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    else:
        mean = state["running_mean"].reshape(shape)
        var = state["running_var"].reshape(shape)
    x_hat = (x - mean) / np.sqrt(var + 1e-5)
    return x_hat * state["weight"].reshape(shape) + state["bias"].reshape(shape)


def bam_by_hand(module, x):
    """F + F * sigmoid(t) written out: the global mean, dense layers as matrix products, the
    convolutions by the loop oracle (dilated by 4, padding 4), BatchNorm by its definition."""
    p = module.parameters()
    layer = module.get_submodule

    def conv(h, name, padding=0, dilation=1):
        prefix = f"spatial_att.gate_s.{name}"
        weight, bias = p[f"{prefix}.weight"], p[f"{prefix}.bias"]
        return conv2d_naive(h, weight, bias, (1, 1), (padding,) * 2, (dilation,) * 2)

    fc = "channel_att.gate_c.gate_c_fc_"
    hidden = x.mean(axis=(2, 3)) @ p[f"{fc}0.weight"].T + p[f"{fc}0.bias"]
    hidden = np.maximum(batchnorm_by_hand(hidden, layer("channel_att.gate_c_bn_1"), 0), 0)
    channel_map = (hidden @ p[f"{fc}final.weight"].T + p[f"{fc}final.bias"])[:, :, None, None]
    h = conv(x, "gate_s_conv_reduce0")
    h = np.maximum(batchnorm_by_hand(h, layer("spatial_att.gate_s_bn_reduce0"), (0, 2, 3)), 0)
    for i in range(2):
        h = conv(h, f"gate_s_conv_di_{i}", padding=4, dilation=4)
        h = batchnorm_by_hand(h, layer(f"spatial_att.gate_s_bn_di_{i}"), (0, 2, 3))
        h = np.maximum(h, 0)
    spatial_map = conv(h, "gate_s_conv_final")
    t = channel_map + spatial_map if module.gate == "paper" else channel_map * spatial_map
    return x + x / (1 + np.exp(-t)), channel_map, spatial_map


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("gate", GATES)
def test_bam_forward_by_hand(gate, mode):
    rng = np.random.default_rng(4)
    module = randomize_batchnorms(npcbam.BAM(6, 2, seed=rng, gate=gate), rng)
    module.train(mode == "train")
    x = rng.standard_normal((3, 6, 5, 4))
    expected, channel_map, spatial_map = bam_by_hand(module, x)
    out = module.forward(x)
    assert relative_error(out, expected) <= 1e-13
    assert relative_error(module.channel_map, channel_map) <= 1e-13
    assert relative_error(module.spatial_map, spatial_map) <= 1e-13
    steps = module.intermediates()
    assert list(steps) == [
        "pooled",
        "channel_map",
        "spatial_map",
        "combined",
        "attention",
        "output",
    ]
    assert steps["pooled"].shape == (3, 6) and steps["combined"].shape == (3, 6, 5, 4)
    np.testing.assert_allclose(steps["pooled"], x.mean(axis=(2, 3)), **EXACT)
    np.testing.assert_array_equal(steps["output"], out)
    np.testing.assert_array_equal(steps["attention"], module.attention)
    np.testing.assert_allclose(out, x * (1 + module.attention), **EXACT)


def test_the_two_gate_forms_differ_on_the_same_parameters():
    """Same state, same input: the sum and the product give different outputs; with the
    product, a zero channel map makes the gate 1 + sigmoid(0) = 3/2 everywhere."""
    rng = np.random.default_rng(5)
    paper = npcbam.BAM(4, 2, seed=rng).eval()
    official = npcbam.BAM(4, 2, seed=0, gate="official").eval()
    official.load_state_dict(paper.state_dict())
    x = rng.standard_normal((2, 4, 3, 3))
    assert relative_error(paper.forward(x), official.forward(x)) > 1e-3
    state = official.state_dict()
    state["channel_att.gate_c.gate_c_fc_final.weight"][:] = 0.0
    state["channel_att.gate_c.gate_c_fc_final.bias"][:] = 0.0
    official.load_state_dict(state)
    np.testing.assert_allclose(official.forward(x), 1.5 * x, **EXACT)


# -- state dict ---------------------------------------------------------------------------------
@pytest.mark.parametrize("gate", GATES)
def test_state_dict_has_the_official_keys_shapes_and_init(gate):
    module = npcbam.BAM(64, seed=0, gate=gate)  # r = 16: C/r = 4
    state = module.state_dict()
    assert list(state) == OFFICIAL_KEYS
    shapes = {key: value.shape for key, value in state.items()}
    assert shapes["channel_att.gate_c.gate_c_fc_0.weight"] == (4, 64)
    assert shapes["channel_att.gate_c.gate_c_fc_final.weight"] == (64, 4)
    assert shapes["spatial_att.gate_s.gate_s_conv_reduce0.weight"] == (4, 64, 1, 1)
    assert shapes["spatial_att.gate_s.gate_s_conv_di_1.weight"] == (4, 4, 3, 3)
    assert shapes["spatial_att.gate_s.gate_s_conv_final.weight"] == (1, 4, 1, 1)
    assert shapes["spatial_att.gate_s.gate_s_bn_di_0.num_batches_tracked"] == ()
    # PyTorch's default init: U(±1/sqrt(fan_in)); BatchNorm weight 1, bias 0
    assert np.abs(state["spatial_att.gate_s.gate_s_conv_di_0.weight"]).max() <= 1 / 6
    assert np.abs(state["channel_att.gate_c.gate_c_fc_final.bias"]).max() <= 1 / 2
    np.testing.assert_array_equal(state["channel_att.gate_c.gate_c_bn_1.weight"], np.ones(4))
    layer = module.get_submodule("spatial_att.gate_s_conv_di_0")
    assert layer.dilation == (4, 4) and layer.padding == (4, 4)


def test_options_reduction_and_dilation():
    module = npcbam.BAM(12, reduction=3, seed=0, dilation=2)
    assert module.hidden == 4
    layer = module.get_submodule("spatial_att.gate_s_conv_di_1")
    assert layer.dilation == (2, 2) and layer.padding == (2, 2)
    x = np.random.default_rng(6).standard_normal((2, 12, 5, 3))
    assert module.forward(x).shape == x.shape
    assert module.spatial_map.shape == (2, 1, 5, 3) and module.channel_map.shape == (2, 12, 1, 1)


@pytest.mark.parametrize("gate", GATES)
def test_float32_computes_in_float32_and_accumulates_in_float64(gate):
    rng = np.random.default_rng(7)
    module = npcbam.BAM(8, 4, seed=rng, gate=gate)
    randomize_batchnorms(module, rng)
    x, dy = rng.standard_normal((2, 8, 4, 3)), rng.standard_normal((2, 8, 4, 3))
    state = module.state_dict()
    y32 = module.forward(x.astype(np.float32))
    dx32 = module.backward(dy.astype(np.float32))
    assert y32.dtype == dx32.dtype == np.float32
    grads32 = {k: v.copy() for k, v in module.grads.items()}
    assert all(g.dtype == np.float64 for g in grads32.values())
    module.load_state_dict(state)  # the running statistics as before the float32 forward
    module.zero_grad()
    y64 = module.forward(x)
    dx64 = module.backward(dy)
    assert relative_error(y32, y64) <= 1e-5 and relative_error(dx32, dx64) <= 1e-4
    largest = max(np.abs(grad).max() for grad in module.grads.values())
    for key, grad in module.grads.items():
        if key in BIASES_BEFORE_BATCHNORM:  # zero in exact arithmetic: rounding only
            assert np.abs(grad).max() <= 1e-13 * largest, key
            assert np.abs(grads32[key]).max() <= 1e-5 * largest, key
        else:
            assert relative_error(grads32[key], grad) <= 1e-4, key


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: npcbam.BAM(8), ValueError, r"channels // reduction = 8 // 16 = 0"),
        (lambda: npcbam.BAM(8, 0), ValueError, r"reduction must be >= 1, got 0"),
        (lambda: npcbam.BAM(8, 2, gate="sum"), ValueError, r"gate='sum'; expected 'paper'"),
        (lambda: npcbam.BAM(8, 2, gate=None), ValueError, r"gate=None; expected 'paper'"),
        (lambda: npcbam.BAM(8, 2, dilation=0), ValueError, r"dilation must be >= 1, got 0"),
        (lambda: npcbam.BAM(8, 2, dilation=2.0), TypeError, r"dilation must be an integer"),
        (lambda: npcbam.BAM(True), TypeError, r"channels must be an integer, got True"),
    ],
    ids=["C/r < 1", "r 0", "gate name", "gate None", "dilation 0", "dilation float", "C bool"],
)
def test_bad_construction(build, error, message):
    with pytest.raises(error, match=message):
        build()


def trained_bam():
    """A BAM after one forward and backward, with a snapshot of everything it holds."""
    rng = np.random.default_rng(8)
    module = randomize_batchnorms(npcbam.BAM(8, 2, seed=rng), rng)
    x = rng.standard_normal((2, 8, 4, 3))
    module.forward(x)
    module.backward(rng.standard_normal(x.shape))
    snapshot = {
        "state": module.state_dict(),
        "grads": {k: v.copy() for k, v in module.grads.items()},
        "maps": (module.channel_map.copy(), module.spatial_map.copy()),
    }
    return module, x, snapshot


def assert_unchanged(module, snapshot):
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(value, snapshot["state"][key], err_msg=key)
    for key, grad in module.grads.items():
        np.testing.assert_array_equal(grad, snapshot["grads"][key], err_msg=key)


@pytest.mark.parametrize(
    ("bad_x", "error", "message"),
    [
        (np.zeros((2, 6, 4, 3)), ValueError, r"x has 6 channels .* built for 8 channels"),
        (np.zeros((8, 4, 3)), ValueError, r"\(3-D\); expected 4-D"),
        (np.zeros((2, 8, 4, 3), dtype=bool), TypeError, r"dtype bool; expected float32"),
        (np.zeros((2, 8, 0, 3)), ValueError, r"every dimension must be at least 1"),
        (np.ones((1, 8, 4, 3)), ValueError, r"BAM in training mode needs a batch of more than"),
    ],
    ids=["channels", "3-D", "bool", "empty", "N = 1 in training"],
)
def test_bad_forward_input_leaves_the_module_unchanged(bad_x, error, message):
    module, _, snapshot = trained_bam()
    with pytest.raises(error, match=message):
        module.forward(bad_x)
    assert_unchanged(module, snapshot)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_x_is_refused_and_changes_nothing(bad_value):
    module, x, snapshot = trained_bam()
    bad = x.copy()
    bad[1, 3, 2, 0] = bad_value
    with pytest.raises(ValueError, match=r"x holds 1 non-finite value\(s\) \(first at index "):
        module.forward(bad)
    assert_unchanged(module, snapshot)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_dy_is_refused_and_changes_nothing(bad_value):
    module, x, _ = trained_bam()
    module.forward(x)  # the running statistics move: snapshot after this forward
    snapshot = {
        "state": module.state_dict(),
        "grads": {k: v.copy() for k, v in module.grads.items()},
    }
    dy = np.ones_like(x)
    dy[0, 5, 1, 2] = bad_value
    with pytest.raises(ValueError, match=r"dy holds 1 non-finite value\(s\) \(first at index "):
        module.backward(dy)
    assert_unchanged(module, snapshot)
    with pytest.raises(ValueError, match=r"dy has shape \(2, 8, 3, 4\); expected"):
        module.backward(np.zeros((2, 8, 3, 4)))
    assert_unchanged(module, snapshot)


def test_load_state_dict_refuses_cbam_keys_and_changes_nothing():
    module, _, snapshot = trained_bam()
    with pytest.raises(ValueError, match=r"(?s)missing keys: .*unexpected keys: \['ChannelGate"):
        module.load_state_dict({"ChannelGate.mlp.1.weight": np.zeros((4, 8))})
    state = module.state_dict()
    state["spatial_att.gate_s.gate_s_bn_di_1.running_var"][0] = -1.0
    with pytest.raises(ValueError, match=r"gate_s_bn_di_1.running_var: holds negative values"):
        module.load_state_dict(state)
    assert_unchanged(module, snapshot)


# -- the broadcast ops --------------------------------------------------------------------------
@given(
    n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3), seed=seeds
)
def test_broadcast_ops_gradients(n, c, h, w, seed):
    """(N, C, 1, 1) and (N, 1, H, W) added and multiplied: each gradient is the upstream one
    (times the other factor) summed over the broadcast axes."""
    rng = np.random.default_rng((seed, 1))
    inputs = {"a": rng.standard_normal((n, c, 1, 1)), "b": rng.standard_normal((n, 1, h, w))}
    for forward, backward in (
        (broadcast_add_forward, broadcast_add_backward),
        (broadcast_multiply_forward, broadcast_multiply_backward),
    ):
        out, _ = forward(inputs["a"], inputs["b"])
        assert out.shape == (n, c, h, w)
        assert_gradients_match(check_op_gradients(forward, backward, inputs, seed=seed))


def test_broadcast_ops_refuse_bad_operands():
    a = np.zeros((2, 3, 1, 1))
    with pytest.raises(ValueError, match=r"a of shape \(2, 3, 1, 1\) and b of shape \(2, 2, 4"):
        broadcast_add_forward(a, np.zeros((2, 2, 4, 4)))
    with pytest.raises(ValueError, match=r"do not broadcast axis by axis"):
        broadcast_multiply_forward(a, np.zeros((1, 4, 4)))
    with pytest.raises(TypeError, match=r"a is float64 and b is float32; expected one dtype"):
        broadcast_add_forward(a, np.zeros((2, 1, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"broadcast_multiply_forward: the result overflows"):
        broadcast_multiply_forward(np.full((1, 1, 1, 1), 1e200), np.full((1, 1, 2, 2), 1e200))
    _, cache = broadcast_add_forward(a, np.zeros((2, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"dout has shape \(2, 3, 4, 3\); expected the output"):
        broadcast_add_backward(np.zeros((2, 3, 4, 3)), cache)


# -- planted bugs: each must fail the gradient check --------------------------------------------
def live_bam(gate: str):
    """BAM in training mode on an input far from every kink (asserted, not assumed), so that
    each planted bug shows in the rows it corrupts and nowhere else by accident."""
    module, x, safe = make_bam(6, 4, 2, (2, 3, 4), gate, "train")
    assert safe, "pick another seed"
    return module, x


def failing_rows(module, x) -> set[str]:
    report = npcbam.check_gradients(module, x, seed=2)
    assert report.kinks == 0, str(report)
    return {row.name for row in report.rows if not row.passed}


@pytest.mark.parametrize("gate", GATES)
def test_unmutated_backward_passes(gate):
    assert failing_rows(*live_bam(gate)) == set()


@pytest.mark.parametrize("gate", GATES)
def test_backward_scaled_by_1_01_fails(monkeypatch, gate):
    original = npcbam.BAM._backward
    monkeypatch.setattr(npcbam.BAM, "_backward", lambda self, dout: 1.01 * original(self, dout))
    assert failing_rows(*live_bam(gate)) == {"input"}


@pytest.mark.parametrize("gate", GATES)
def test_identity_path_dropped_fails(monkeypatch, gate):
    """F' = F + F * sigma(t): a backward without the identity's share (dout itself) fails in
    the input only."""
    original = npcbam.BAM._backward
    monkeypatch.setattr(npcbam.BAM, "_backward", lambda self, dout: original(self, dout) - dout)
    assert failing_rows(*live_bam(gate)) == {"input"}


@pytest.mark.parametrize("gate", GATES)
def test_map_gradient_not_reduced_fails(monkeypatch, gate):
    """Each map's gradient read at one broadcast copy (the first pixel for M_c, the first
    channel for M_s) instead of summed over all of them: the input and every parameter of
    both branches fail (but the biases before a training-mode BatchNorm, whose gradient is
    zero whatever reaches them)."""

    def first_copy(grad, shape):
        return grad[tuple(slice(0, 1) if size == 1 else slice(None) for size in shape)]

    monkeypatch.setattr(broadcast_module, "sum_to_shape", first_copy)
    module, x = live_bam(gate)
    assert failing_rows(module, x) == {"input", *module.parameters()} - BIASES_BEFORE_BATCHNORM
