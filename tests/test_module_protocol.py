"""The module API: state_dict keys and shapes, loading, initialisation, dtypes, gradient
accumulation, attention maps, and kink reporting."""

import math

import numpy as np
import pytest

import npcbam
from npcbam.gradcheck import distinct_values


@pytest.mark.parametrize(("channels", "reduction", "kernel"), [(32, 16, 7), (4, 4, 3), (9, 2, 1)])
def test_state_dict_has_seed_keys_and_shapes(channels, reduction, kernel):
    """Keys and shapes of seed code 1's PyTorch module; hidden width is C // r (floor)."""
    module = npcbam.CBAM(channels, reduction, kernel, seed=0)
    hidden = channels // reduction
    shapes = {name: value.shape for name, value in module.state_dict().items()}
    assert shapes == {
        "mlp.0.weight": (hidden, channels, 1, 1),
        "mlp.2.weight": (channels, hidden, 1, 1),
        "conv.weight": (1, 2, kernel, kernel),
    }
    assert {k: v.shape for k, v in module.grads.items()} == shapes
    assert all(v.dtype == np.float64 for v in module.state_dict().values())


def test_state_dict_returns_copies():
    module = npcbam.CBAM(4, 2, seed=0)
    weights = module.state_dict()
    weights["conv.weight"][...] = 0.0
    assert np.abs(module.state_dict()["conv.weight"]).sum() > 0


def test_load_float32_state_dict_stores_float64():
    source = npcbam.CBAM(8, 4, 5, seed=1)
    float32_weights = {k: v.astype(np.float32) for k, v in source.state_dict().items()}
    target = npcbam.CBAM(8, 4, 5, seed=2)
    target.load_state_dict(float32_weights)
    for name, value in target.state_dict().items():
        assert value.dtype == np.float64
        np.testing.assert_array_equal(value, float32_weights[name].astype(np.float64))


def test_seed_makes_initialisation_reproducible():
    a, b, c = (npcbam.CBAM(16, 4, 7, seed=s) for s in (5, 5, 6))
    for name in a.state_dict():
        np.testing.assert_array_equal(a.state_dict()[name], b.state_dict()[name])
        assert not np.array_equal(a.state_dict()[name], c.state_dict()[name])


def test_initialisation_follows_pytorch_default_bound():
    """PyTorch's Conv2d default, kaiming_uniform_(a=sqrt(5)), is U(-1/sqrt(fan_in),
    1/sqrt(fan_in)) with fan_in = in_channels * kh * kw: every draw within the bound, and the
    spread of a uniform (std = bound / sqrt(3)) within sampling error."""
    module = npcbam.CBAM(256, 4, 7, seed=0)
    fan_ins = {"mlp.0.weight": 256, "mlp.2.weight": 64, "conv.weight": 2 * 7 * 7}
    for name, value in module.state_dict().items():
        bound = 1 / math.sqrt(fan_ins[name])
        assert np.abs(value).max() <= bound
        assert np.abs(value).max() > 0.9 * bound
        assert value.std() == pytest.approx(bound / math.sqrt(3), rel=0.15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compute_dtype_follows_input(dtype):
    """float32 in, float32 out and dx; float64 in, float64 out; buffers stay float64."""
    rng = np.random.default_rng(0)
    module = npcbam.CBAM(8, 2, 3, seed=rng)
    x = rng.standard_normal((2, 8, 4, 5)).astype(dtype)
    y = module.forward(x)
    dx = module.backward(rng.standard_normal(x.shape).astype(dtype))
    assert y.dtype == dtype and dx.dtype == dtype and y.shape == x.shape == dx.shape
    assert module.channel_map.dtype == dtype and module.spatial_map.dtype == dtype
    assert all(g.dtype == np.float64 for g in module.grads.values())


def test_float32_and_float64_agree():
    """The float32 computation matches the float64 one to float32 precision."""
    rng = np.random.default_rng(1)
    module = npcbam.CBAM(16, 4, 7, seed=rng)
    x = rng.standard_normal((2, 16, 6, 6))
    dy = rng.standard_normal(x.shape)
    y64, dx64 = module.forward(x), module.backward(dy)
    y32, dx32 = module.forward(x.astype(np.float32)), module.backward(dy.astype(np.float32))
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx32, dx64, rtol=1e-4, atol=1e-5)


def test_output_is_spatial_gate_times_channel_gated_input():
    """Seed code 1's output: spatial_map * (channel_map * x), with the documented map shapes."""
    rng = np.random.default_rng(2)
    module = npcbam.CBAM(6, 3, 5, seed=rng)
    x = rng.standard_normal((3, 6, 4, 7))
    y = module(x)
    assert module.channel_map.shape == (3, 6, 1, 1)
    assert module.spatial_map.shape == (3, 1, 4, 7)
    assert 0 < module.channel_map.min() and module.channel_map.max() < 1
    np.testing.assert_allclose(y, module.spatial_map * (module.channel_map * x), rtol=1e-15)


def test_backward_accumulates_until_zero_grad():
    """Like PyTorch's .grad: two backward passes add up; zero_grad resets."""
    rng = np.random.default_rng(3)
    module = npcbam.CBAM(4, 2, 3, seed=rng)
    x, dy = rng.standard_normal((1, 4, 3, 3)), rng.standard_normal((1, 4, 3, 3))
    module.forward(x)
    module.backward(dy)
    once = {k: v.copy() for k, v in module.grads.items()}
    module.backward(dy)
    for name, grad in module.grads.items():
        np.testing.assert_allclose(grad, 2 * once[name], rtol=1e-15)
    module.zero_grad()
    assert all(not g.any() for g in module.grads.values())


def test_standalone_modules_have_their_own_keys():
    assert set(npcbam.ChannelAttention(8, 2).state_dict()) == {"mlp.0.weight", "mlp.2.weight"}
    assert set(npcbam.SpatialAttention(3).state_dict()) == {"conv.weight"}


def test_intermediates_follow_the_pipeline():
    """The named steps (used by ``npcbam trace``) are the seed's pipeline and consistent."""
    rng = np.random.default_rng(4)
    module = npcbam.CBAM(8, 4, 3, seed=rng)
    x = rng.standard_normal((2, 8, 5, 5))
    y = module(x)
    steps = module.intermediates()
    np.testing.assert_array_equal(steps["input"], x)
    np.testing.assert_allclose(steps["channel.avg_pooled"], x.mean(axis=(2, 3)))
    np.testing.assert_allclose(steps["channel.max_pooled"], x.max(axis=(2, 3)))
    gated = steps["channel.output"]
    np.testing.assert_allclose(steps["spatial.max_over_channels"], gated.max(1, keepdims=True))
    np.testing.assert_allclose(steps["spatial.mean_over_channels"], gated.mean(1, keepdims=True))
    np.testing.assert_allclose(steps["spatial.output"], y)


def test_a_tie_in_the_input_is_reported_as_a_kink():
    """Two equal maxima in one channel: moving either by h changes the winner, so the checker
    must flag those coordinates (and not compare them) rather than report a failure."""
    rng = np.random.default_rng(5)
    module = npcbam.CBAM(2, 1, 3, seed=rng)
    x = distinct_values(rng, (1, 2, 3, 3))
    x[0, 0, 2, 2] = x[0, 0].max()  # a second copy of channel 0's maximum
    assert (x[0, 0] == x[0, 0].max()).sum() == 2
    report = npcbam.check_gradients(module, x)
    assert report["input"].kinks >= 2
    assert report["input"].checked + report["input"].kinks == x.size
    assert "kinks not compared" in str(report)
