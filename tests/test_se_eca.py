"""SE and ECA: finite differences (input and every parameter, float64, edge shapes), state
dicts, float32 computation, ECA's adaptive kernel size against timm's, bad input that leaves
the module unchanged, and planted backward bugs that the gradient check must catch."""

import math

import numpy as np
import pytest
from helpers import MAX_REL_ERR, SAFE_MARGIN, relative_error, seeds
from hypothesis import assume, example, given
from hypothesis import strategies as st

import npcbam
import npcbam.nn.channel_gate as channel_gate_module
import npcbam.nn.eca as eca_module
import npcbam.ops.mlp as mlp_module
from npcbam.nn.eca import eca_kernel_size
from npcbam.testing import assert_module_gradients, channels_and_reduction, relu_margin

sides = st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5))  # N, H, W


def data_rng(seed: int) -> np.random.Generator:
    """Data drawn from the stream ``(seed, 1)``: the checker's upstream gradient comes from
    ``default_rng(seed)``, and the two must not coincide."""
    return np.random.default_rng((seed, 1))


def se_hidden_pre_activation(module: npcbam.SE, x: np.ndarray) -> np.ndarray:
    """fc1's output W1 z + b1 (N, C/r), what the ReLU meets."""
    params = module.parameters()
    w1 = params["fc1.weight"].reshape(module.hidden, module.channels)
    return x.mean(axis=(2, 3)) @ w1.T + params["fc1.bias"]


def se_case(seed: int, channels: int, reduction: int, shape, hidden=None):
    """An SE module and an input whose ReLU inputs all stay SAFE_MARGIN from 0."""
    rng = data_rng(seed)
    module = npcbam.SE(channels, reduction, seed=rng, hidden=hidden)
    n, h, w = shape
    x = rng.standard_normal((n, channels, h, w))
    assume(relu_margin(se_hidden_pre_activation(module, x)) >= SAFE_MARGIN)
    return module, x


# -- finite differences -------------------------------------------------------------------------
@given(c_r=channels_and_reduction(), shape=sides, seed=seeds)
@example(c_r=(3, 3), shape=(1, 1, 1), seed=0)  # N = 1, C = r (hidden width 1), H = W = 1
@example(c_r=(5, 2), shape=(2, 2, 5), seed=1)  # H != W, C // r with a remainder
def test_se_gradients(c_r, shape, seed):
    module, x = se_case(seed, *c_r, shape)
    report = assert_module_gradients(module, x, seed=seed)
    assert [row.name for row in report.rows] == [
        "input",
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    ]


@given(hidden=st.integers(1, 6), shape=sides, seed=seeds)
def test_se_gradients_with_an_explicit_hidden_width(hidden, shape, seed):
    module, x = se_case(seed, 3, 16, shape, hidden=hidden)  # 3 // 16 = 0, overridden
    assert module.state_dict()["fc1.weight"].shape == (hidden, 3, 1, 1)
    assert_module_gradients(module, x, seed=seed)


@given(
    channels=st.integers(1, 9),
    kernel=st.sampled_from([None, 1, 3, 5, 7, 9]),
    shape=sides,
    seed=seeds,
)
@example(channels=1, kernel=None, shape=(1, 1, 1), seed=0)  # N = 1, C = 1, H = W = 1: k = 1
@example(channels=3, kernel=3, shape=(1, 2, 5), seed=1)  # k = C, H != W
@example(channels=9, kernel=9, shape=(2, 3, 1), seed=2)
def test_eca_gradients(channels, kernel, shape, seed):
    assume(kernel is None or kernel <= channels)
    rng = data_rng(seed)
    module = npcbam.ECA(channels, kernel, seed=rng)
    n, h, w = shape
    report = assert_module_gradients(module, rng.standard_normal((n, channels, h, w)), seed=seed)
    assert [row.name for row in report.rows] == ["input", "conv.weight"]


def test_large_modules_in_random_direction_mode():
    """Realistic widths (C = 64: ECA's k = 3; SE with r = 16) in the random-direction mode."""
    rng = data_rng(7)
    x = rng.standard_normal((2, 64, 6, 5))
    for module in (npcbam.SE(64, 16, seed=rng), npcbam.ECA(64, seed=rng)):
        report = npcbam.check_gradients(module, x, mode="random", n_directions=8)
        assert report.passed and report.kinks == 0, str(report)
        assert report.max_rel_err <= MAX_REL_ERR


# -- what the modules compute -------------------------------------------------------------------
def test_se_forward_by_hand():
    """sigmoid(fc2(relu(fc1(mean over H×W)))) times x, written out with NumPy."""
    rng = data_rng(3)
    module = npcbam.SE(6, 2, seed=rng)
    x = rng.standard_normal((2, 6, 3, 4))
    p = module.parameters()
    hidden = np.maximum(x.mean(axis=(2, 3)) @ p["fc1.weight"][:, :, 0, 0].T + p["fc1.bias"], 0)
    logits = hidden @ p["fc2.weight"][:, :, 0, 0].T + p["fc2.bias"]
    expected = x / (1 + np.exp(-logits))[:, :, None, None]
    assert relative_error(module.forward(x), expected) <= 1e-14
    assert list(module.intermediates()) == ["pooled", "hidden", "logits", "channel_map", "output"]
    np.testing.assert_array_equal(module.intermediates()["output"], module.forward(x))


def test_eca_forward_by_hand():
    """A channel's gate reads its neighbours only: with k = 3 the first and last channel see
    one padding zero each."""
    module = npcbam.ECA(4, kernel_size=3, seed=0)
    module.load_state_dict({"conv.weight": np.array([[[0.5, -1.0, 2.0]]])})
    x = np.arange(1.0, 9.0).reshape(1, 4, 1, 2)  # channel means 1.5, 3.5, 5.5, 7.5
    logits = np.array([-1.5 + 7.0, 0.75 - 3.5 + 11.0, 1.75 - 5.5 + 15.0, 2.75 - 7.5])
    expected = x / (1 + np.exp(-logits))[None, :, None, None]
    assert relative_error(module.forward(x), expected) <= 1e-15
    np.testing.assert_array_equal(module.intermediates()["logits"][0], logits)


@pytest.mark.parametrize("make", [lambda: npcbam.SE(8, 4, seed=0), lambda: npcbam.ECA(8, seed=0)])
def test_float32_computes_in_float32_and_accumulates_in_float64(make):
    module = make()
    before = module.state_dict()
    rng = data_rng(4)
    x = rng.standard_normal((2, 8, 3, 3))
    dy = rng.standard_normal(x.shape)
    y = module.forward(x.astype(np.float32))
    dx = module.backward(dy.astype(np.float32))
    assert y.dtype == dx.dtype == np.float32
    grads32 = {k: v.copy() for k, v in module.grads.items()}
    assert all(g.dtype == np.float64 for g in grads32.values())
    module.zero_grad()
    y64 = module.forward(x)
    module.backward(dy)
    assert relative_error(y, y64) <= 1e-6
    for key, grad in module.grads.items():
        assert relative_error(grads32[key], grad) <= 1e-5, key
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_gradients_accumulate_until_zero_grad():
    rng = data_rng(5)
    module = npcbam.ECA(8, seed=rng)
    x, dy = rng.standard_normal((2, 8, 3, 3)), rng.standard_normal((2, 8, 3, 3))
    module.forward(x)
    module.backward(dy)
    once = module.grads["conv.weight"].copy()
    module.forward(x)
    module.backward(dy)
    np.testing.assert_allclose(module.grads["conv.weight"], 2 * once, rtol=1e-15)


# -- state dicts --------------------------------------------------------------------------------
def test_se_state_dict_keys_shapes_and_init():
    module = npcbam.SE(32, 8, seed=0)
    assert {k: v.shape for k, v in module.state_dict().items()} == {
        "fc1.weight": (4, 32, 1, 1),
        "fc1.bias": (4,),
        "fc2.weight": (32, 4, 1, 1),
        "fc2.bias": (32,),
    }
    assert list(module.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    state = module.state_dict()
    # PyTorch's default: U(±1/sqrt(fan_in)), fan_in = 32 for fc1 and 4 for fc2
    assert np.abs(state["fc1.weight"]).max() <= 1 / math.sqrt(32)
    assert np.abs(state["fc2.bias"]).max() <= 1 / math.sqrt(4)
    assert np.abs(state["fc2.weight"]).max() > 1 / math.sqrt(32)  # not fc1's bound
    assert npcbam.SE(64, hidden=8, seed=0).state_dict()["fc2.weight"].shape == (64, 8, 1, 1)


def test_eca_state_dict_and_init():
    module = npcbam.ECA(256, seed=0)  # the paper's k = 5 at C = 256
    assert module.kernel_size == 5
    state = module.state_dict()
    assert list(state) == ["conv.weight"] and state["conv.weight"].shape == (1, 1, 5)
    assert np.abs(state["conv.weight"]).max() <= 1 / math.sqrt(5)
    other = npcbam.ECA(256, seed=1)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.state_dict()["conv.weight"], state["conv.weight"])


# -- ECA's kernel size --------------------------------------------------------------------------
def timm_kernel_size(channels: int) -> int:
    """timm's EcaModule rule (timm/layers/eca.py), written out for comparison: the same t,
    then at least 3."""
    t = int(abs(math.log(channels, 2) + 1) / 2)
    return max(t if t % 2 else t + 1, 3)


@pytest.mark.parametrize(
    ("channels", "kernel"),
    [(1, 1), (2, 1), (7, 1), (8, 3), (64, 3), (127, 3), (128, 5), (256, 5), (2047, 5), (2048, 7)],
)
def test_adaptive_kernel_size_from_the_paper(channels, kernel):
    """t = int(|(log2 C + 1) / 2|), then the next odd number: the steps fall at C = 8, 128,
    2048 (where log2 C + 1 reaches 4, 8, 12)."""
    assert eca_kernel_size(channels) == kernel
    assert npcbam.ECA(channels).kernel_size == kernel


def test_adaptive_kernel_size_against_timm():
    """The rules differ exactly for C < 8 (the paper's k = 1, timm's minimum 3) and agree on
    every C from 8 up to the largest width npcbam accepts."""
    differ = [c for c in range(1, 2**16 + 1) if eca_kernel_size(c) != timm_kernel_size(c)]
    assert differ == list(range(1, 8))
    assert all(eca_kernel_size(c) == 1 and timm_kernel_size(c) == 3 for c in differ)
    # where timm's k = 3 fits (3 <= C < 8) it can be asked for explicitly
    assert all(npcbam.ECA(c, kernel_size=3).kernel_size == 3 for c in range(3, 8))


def test_log2_and_log_base_2_agree_on_t():
    """math.log(C, 2), as some implementations write it, is not exact at powers of two; t is
    the same for every C below 2**20 all the same."""
    for c in range(1, 2**20):
        assert int((math.log2(c) + 1) / 2) == int(abs((math.log(c, 2) + 1) / 2)), c


def test_kernel_size_with_other_gamma_and_b():
    assert eca_kernel_size(256, gamma=1, b=0) == 9  # t = 8, even: 9
    assert eca_kernel_size(256, gamma=3, b=1) == 3  # t = 3
    with pytest.raises(ValueError, match=r"gamma must be > 0, got 0"):
        eca_kernel_size(8, gamma=0)
    with pytest.raises(TypeError, match=r"b must be a real number, got True"):
        eca_kernel_size(8, b=True)
    with pytest.raises(ValueError, match=r"gamma must be finite, got nan"):
        eca_kernel_size(8, gamma=float("nan"))


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: npcbam.SE(4, 16), ValueError, r"channels // reduction = 4 // 16 = 0"),
        (lambda: npcbam.SE(4, 2, hidden=0), ValueError, r"hidden must be >= 1, got 0"),
        (lambda: npcbam.SE(4, 0), ValueError, r"reduction must be >= 1, got 0"),
        (lambda: npcbam.SE(True), TypeError, r"channels must be an integer, got True"),
        (lambda: npcbam.SE(4, True), TypeError, r"reduction must be an integer, got True"),
        (lambda: npcbam.SE(4, 2, hidden=True), TypeError, r"hidden must be an integer"),
        (lambda: npcbam.SE(4.0), TypeError, r"channels must be an integer, got 4.0"),
        (lambda: npcbam.ECA(8, 4), ValueError, r"kernel_size=4 is even"),
        (lambda: npcbam.ECA(4, 5), ValueError, r"kernel_size=5 is larger than channels=4"),
        (lambda: npcbam.ECA(2, 3), ValueError, r"wider than the channel vector"),
        (lambda: npcbam.ECA(8, 0), ValueError, r"kernel_size must be >= 1, got 0"),
        (lambda: npcbam.ECA(8, True), TypeError, r"kernel_size must be an integer, got True"),
        (lambda: npcbam.ECA(8, 3.0), TypeError, r"kernel_size must be an integer, got 3.0"),
        (lambda: npcbam.ECA(0), ValueError, r"channels must be >= 1, got 0"),
        (lambda: npcbam.ECA(False), TypeError, r"channels must be an integer, got False"),
    ],
    ids=[
        "C/r < 1",
        "hidden 0",
        "r 0",
        "C bool",
        "r bool",
        "hidden bool",
        "C float",
        "even k",
        "k > C",
        "k > C = 2",
        "k 0",
        "k bool",
        "k float",
        "C 0",
        "C bool (ECA)",
    ],
)
def test_bad_construction(build, error, message):
    with pytest.raises(error, match=message):
        build()


def trained_module(kind: str):
    """An SE or ECA after one forward and backward, with a snapshot of its whole state."""
    rng = data_rng(9)
    module = npcbam.SE(8, 2, seed=rng) if kind == "SE" else npcbam.ECA(8, seed=rng)
    x = rng.standard_normal((2, 8, 4, 3))
    module.forward(x)
    module.backward(rng.standard_normal(x.shape))
    snapshot = {
        "state": module.state_dict(),
        "grads": {k: v.copy() for k, v in module.grads.items()},
        "channel_map": module.channel_map.copy(),
    }
    return module, x, snapshot


def assert_unchanged(module, snapshot):
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(value, snapshot["state"][key])
        np.testing.assert_array_equal(module.grads[key], snapshot["grads"][key])
    np.testing.assert_array_equal(module.channel_map, snapshot["channel_map"])


KINDS = ("SE", "ECA")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("bad_x", "error", "message"),
    [
        (np.zeros((2, 6, 4, 3)), ValueError, r"x has 6 channels .* built for 8 channels"),
        (np.zeros((8, 4, 3)), ValueError, r"\(3-D\); expected 4-D"),
        (np.zeros((2, 8, 4, 3), dtype=bool), TypeError, r"dtype bool; expected float32"),
        (np.zeros((2, 8, 0, 3)), ValueError, r"every dimension must be at least 1"),
    ],
    ids=["channels", "3-D", "bool", "empty"],
)
def test_bad_forward_input_leaves_the_module_unchanged(kind, bad_x, error, message):
    module, _, snapshot = trained_module(kind)
    with pytest.raises(error, match=message):
        module.forward(bad_x)
    assert_unchanged(module, snapshot)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_x_is_refused_and_changes_nothing(kind, bad_value):
    module, x, snapshot = trained_module(kind)
    bad = x.copy()
    bad[1, 3, 2, 0] = bad_value
    with pytest.raises(ValueError, match=r"x holds 1 non-finite value\(s\) \(first at index "):
        module.forward(bad)
    assert_unchanged(module, snapshot)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_dy_is_refused_and_changes_nothing(kind, bad_value):
    module, x, snapshot = trained_module(kind)
    module.forward(x)  # the same x: the cache (and the map) as in the snapshot
    dy = np.ones_like(x)
    dy[0, 5, 1, 2] = bad_value
    with pytest.raises(ValueError, match=r"holds 1 non-finite value\(s\) \(first at index "):
        module.backward(dy)
    assert_unchanged(module, snapshot)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_dy_shape_is_refused(kind):
    module, _, snapshot = trained_module(kind)
    with pytest.raises(ValueError, match=r"dy has shape \(2, 8, 3, 4\); expected"):
        module.backward(np.zeros((2, 8, 3, 4)))
    assert_unchanged(module, snapshot)


def test_load_state_dict_refuses_wrong_kernel_and_keys():
    module, _, snapshot = trained_module("ECA")
    with pytest.raises(ValueError, match=r"conv.weight: shape \(1, 1, 5\), expected \(1, 1, 3\)"):
        module.load_state_dict({"conv.weight": np.zeros((1, 1, 5))})
    with pytest.raises(ValueError, match=r"unexpected keys: \['conv.bias'\]"):
        module.load_state_dict({"conv.weight": np.zeros((1, 1, 3)), "conv.bias": np.zeros(1)})
    assert_unchanged(module, snapshot)
    se, _, se_snapshot = trained_module("SE")
    state = se.state_dict()
    state["fc1.bias"] = np.full(4, np.nan)
    with pytest.raises(ValueError, match=r"fc1.bias: holds non-finite values"):
        se.load_state_dict(state)
    assert_unchanged(se, se_snapshot)


# -- planted bugs: each must fail the gradient check --------------------------------------------
def failing_rows(module, x) -> set[str]:
    report = npcbam.check_gradients(module, x, seed=2)
    assert report.kinks == 0, str(report)
    return {row.name for row in report.rows if not row.passed}


def live_se(reduction: int):
    """SE on an input whose every hidden unit is active in every image (a dead unit would
    zero part of the weight gradients and could hide a wrong one)."""
    rng = data_rng(11)
    module = npcbam.SE(4, reduction, seed=rng)
    params = module.parameters()
    params["fc1.bias"][:] = 2.0 + np.arange(module.hidden)  # distinct, far above 0
    x = rng.standard_normal((2, 4, 3, 2))
    assert se_hidden_pre_activation(module, x).min() > SAFE_MARGIN
    return module, x


def eca_case():
    rng = data_rng(12)
    return npcbam.ECA(7, kernel_size=3, seed=rng), rng.standard_normal((2, 7, 3, 2))


@pytest.mark.parametrize("case", [lambda: live_se(1), lambda: live_se(2), eca_case])
def test_unmutated_backward_passes(case):
    assert failing_rows(*case()) == set()


@pytest.mark.parametrize("cls", [npcbam.SE, npcbam.ECA])
def test_backward_scaled_by_1_01_fails(monkeypatch, cls):
    module, x = live_se(2) if cls is npcbam.SE else eca_case()
    original = cls._backward
    monkeypatch.setattr(cls, "_backward", lambda self, dout: 1.01 * original(self, dout))
    assert failing_rows(module, x) == {"input"}


def test_transposed_se_weight_gradient_fails(monkeypatch):
    """dW returned transposed (same shape when C/r = C, r = 1): both weight rows fail; the
    input and the biases, which do not use dW, pass."""
    module, x = live_se(1)
    original = mlp_module.linear_backward

    def transposed(dout, cache):
        dx, dweight, dbias = original(dout, cache)
        return dx, dweight.T, dbias

    monkeypatch.setattr(mlp_module, "linear_backward", transposed)
    assert failing_rows(module, x) == {"fc1.weight", "fc2.weight"}


def test_eca_kernel_gradient_with_padding_off_by_one_fails(monkeypatch):
    """The kernel gradient read from windows padded p + 1 on the left and p - 1 on the right
    (each tap paired with its neighbour's channel): conv.weight fails, the input passes."""
    original = eca_module.conv1d_channels_backward

    def shifted(dout, cache):
        dv, _ = original(dout, cache)
        k = cache.weight.shape[0]
        p = (k - 1) // 2
        padded = np.pad(cache.v, ((0, 0), (p + 1, p - 1)))  # (N, C + k - 1), off by one
        windows = np.lib.stride_tricks.sliding_window_view(padded, k, axis=1)  # (N, C, k)
        return dv, np.tensordot(dout, windows, axes=([0, 1], [0, 1]))

    monkeypatch.setattr(eca_module, "conv1d_channels_backward", shifted)
    assert failing_rows(*eca_case()) == {"conv.weight"}


def test_eca_flipped_kernel_gradient_fails(monkeypatch):
    """The 1-D analogue of a transposed weight gradient: the kernel gradient reversed."""
    original = eca_module.conv1d_channels_backward
    monkeypatch.setattr(
        eca_module,
        "conv1d_channels_backward",
        lambda dout, cache: (lambda dv, dw: (dv, dw[::-1]))(*original(dout, cache)),
    )
    assert failing_rows(*eca_case()) == {"conv.weight"}


def test_eca_dropped_pooling_path_fails(monkeypatch):
    """x is used twice (the gate and the average pool); dropping the pool's share fails."""
    monkeypatch.setattr(
        channel_gate_module, "global_avg_pool_backward", lambda d, c, add_to: add_to
    )
    assert failing_rows(*eca_case()) == {"input"}
