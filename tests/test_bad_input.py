"""Bad input: each case raises a clear error naming the value and what was expected, and
leaves the module exactly as it was (parameters, gradients, and the last forward's cache)."""

import numpy as np
import pytest

import npcbam


@pytest.fixture
def module_after_step():
    """A CBAM after one forward and backward, with a snapshot of its whole state."""
    rng = np.random.default_rng(0)
    module = npcbam.CBAM(8, reduction=4, kernel_size=3, seed=rng)
    x = rng.standard_normal((2, 8, 5, 4))
    module.forward(x)
    module.backward(rng.standard_normal(x.shape))
    snapshot = {
        "params": module.state_dict(),
        "grads": {k: v.copy() for k, v in module.grads.items()},
        "channel_map": module.channel_map.copy(),
        "spatial_map": module.spatial_map.copy(),
    }
    return module, x, snapshot


def assert_unchanged(module, snapshot):
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal(value, snapshot["params"][name])
        np.testing.assert_array_equal(module.grads[name], snapshot["grads"][name])
    np.testing.assert_array_equal(module.channel_map, snapshot["channel_map"])
    np.testing.assert_array_equal(module.spatial_map, snapshot["spatial_map"])


@pytest.mark.parametrize(
    ("bad_x", "error", "message"),
    [
        (np.zeros((8, 5, 4)), ValueError, r"shape \(8, 5, 4\) \(3-D\); expected 4-D"),
        (np.zeros((1, 2, 8, 5, 4)), ValueError, r"5-D\); expected 4-D"),
        (np.zeros((2, 6, 5, 4)), ValueError, r"x has 6 channels .* built for 8 channels"),
        (np.zeros((2, 8, 5, 4), dtype=np.int64), TypeError, r"dtype int64; expected float32"),
        (np.zeros((2, 8, 5, 4), dtype=bool), TypeError, r"dtype bool; expected float32"),
        (np.zeros((2, 8, 5, 4), dtype=np.float16), TypeError, r"dtype float16"),
        (np.zeros((0, 8, 5, 4)), ValueError, r"every dimension must be at least 1"),
    ],
    ids=["3-D", "5-D", "channels", "int64", "bool", "float16", "empty"],
)
def test_bad_forward_input(module_after_step, bad_x, error, message):
    module, _, snapshot = module_after_step
    with pytest.raises(error, match=message):
        module.forward(bad_x)
    assert_unchanged(module, snapshot)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected(module_after_step, bad_value):
    """Policy: npcbam raises on NaN/inf (it does not propagate them as PyTorch would); the
    message counts them and gives the first index."""
    module, x, snapshot = module_after_step
    bad = x.copy()
    bad[1, 2, 3, 0] = bad_value
    expected = r"1 non-finite value\(s\) \(first at index \(1, 2, 3, 0\)"
    with pytest.raises(ValueError, match=expected):
        module.forward(bad)
    assert_unchanged(module, snapshot)


def test_large_finite_input_is_accepted():
    """A finite input whose total sum overflows float32 is not mistaken for a non-finite one
    (the cheap check sums everything; only the element-wise fallback decides)."""
    module = npcbam.CBAM(4, reduction=2, seed=0)
    x = np.full((1, 4, 4, 4), 1e37, dtype=np.float32)
    with np.errstate(over="ignore"):
        assert np.isinf(x.sum())  # 64 * 1e37 > float32 max
    y = module.forward(x)
    assert y.dtype == np.float32 and np.isfinite(y).all()


def test_backward_before_forward():
    module = npcbam.CBAM(4, reduction=2, seed=0)
    with pytest.raises(RuntimeError, match=r"backward\(\) called before any forward\(\)"):
        module.backward(np.zeros((1, 4, 3, 3)))
    with pytest.raises(RuntimeError, match=r"call forward\(\) first"):
        module.channel_map


@pytest.mark.parametrize(
    ("bad_dy", "error", "message"),
    [
        (
            np.zeros((2, 8, 4, 5)),
            ValueError,
            r"dy has shape \(2, 8, 4, 5\); expected .*\(2, 8, 5, 4\)",
        ),
        (np.zeros((2, 8, 5, 4), dtype=np.int32), TypeError, r"dy has dtype int32"),
        (np.full((2, 8, 5, 4), np.nan), ValueError, r"dy holds 320 non-finite"),
    ],
    ids=["shape", "dtype", "nan"],
)
def test_bad_upstream_gradient(module_after_step, bad_dy, error, message):
    module, _, snapshot = module_after_step
    with pytest.raises(error, match=message):
        module.backward(bad_dy)
    assert_unchanged(module, snapshot)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"channels": 4, "reduction": 16}, ValueError, r"channels // reduction = 4 // 16 = 0"),
        ({"channels": 8, "reduction": 2, "kernel_size": 4}, ValueError, r"kernel_size=4 is even"),
        (
            {"channels": 8, "reduction": 2, "kernel_size": 0},
            ValueError,
            r"kernel_size must be >= 1",
        ),
        ({"channels": 0}, ValueError, r"channels must be >= 1, got 0"),
        ({"channels": 8, "reduction": 0}, ValueError, r"reduction must be >= 1, got 0"),
        ({"channels": 8, "reduction": -2}, ValueError, r"reduction must be >= 1, got -2"),
        ({"channels": 8.0}, TypeError, r"channels must be an integer, got 8.0"),
        ({"channels": 8, "reduction": True}, TypeError, r"reduction must be an integer"),
    ],
)
def test_bad_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        npcbam.CBAM(**kwargs)


def test_load_state_dict_reports_every_problem_and_changes_nothing(module_after_step):
    module, _, snapshot = module_after_step
    bad = {
        "mlp.0.weight": np.ones((2, 8, 1, 1)),  # valid on its own: must not be loaded either
        "mlp.2.weight": np.ones((8, 2)),  # wrong shape
        "conv.bias": np.ones(1),  # unexpected
        # conv.weight missing
    }
    with pytest.raises(ValueError) as info:
        module.load_state_dict(bad)
    message = str(info.value)
    assert "missing keys: ['conv.weight']" in message
    assert "unexpected keys: ['conv.bias']" in message
    assert "mlp.2.weight: shape (8, 2), expected (8, 2, 1, 1)" in message
    assert "nothing was changed" in message
    assert_unchanged(module, snapshot)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.ones((1, 2, 3, 3), dtype=np.int64), r"conv.weight: dtype int64"),
        (np.full((1, 2, 3, 3), np.nan), r"conv.weight: holds non-finite values"),
    ],
)
def test_load_state_dict_rejects_bad_values(module_after_step, value, message):
    module, _, snapshot = module_after_step
    weights = module.state_dict()
    weights["conv.weight"] = value
    with pytest.raises(ValueError, match=message):
        module.load_state_dict(weights)
    assert_unchanged(module, snapshot)


def test_gradcheck_refuses_float32():
    module = npcbam.CBAM(4, reduction=2, seed=0)
    with pytest.raises(TypeError, match=r"x has dtype float32; finite differences need float64"):
        npcbam.check_gradients(module, np.zeros((1, 4, 3, 3), dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"mode": "fast"}, r"mode='fast'"), ({"order": 3}, r"order=3"), ({"h": 0.0}, r"h > 0")],
)
def test_gradcheck_rejects_bad_settings(kwargs, message):
    module = npcbam.CBAM(4, reduction=2, seed=0)
    with pytest.raises(ValueError, match=message):
        npcbam.check_gradients(module, np.ones((1, 4, 3, 3)), **kwargs)
