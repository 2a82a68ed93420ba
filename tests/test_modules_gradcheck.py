"""Finite-difference checks of ChannelAttention, SpatialAttention and CBAM (float64).

Inputs are tie-free grids; ``assume()`` keeps every max and ReLU that the module actually
evaluates (the max over channels acts on the *channel-gated* map, not on x) at least
SAFE_MARGIN away from its kink, so every coordinate is compared and none is skipped.
"""

import numpy as np
from helpers import (
    MAX_REL_ERR,
    SAFE_MARGIN,
    assert_gradients_match,
    distinct_values,
    kink_margin,
    relu_margin,
    seeds,
)
from hypothesis import assume, example, given
from hypothesis import strategies as st

import npcbam

shapes = st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5))  # N, H, W


@given(shape=shapes, reduction=st.integers(1, 4), extra=st.integers(0, 3), seed=seeds)
@example(shape=(1, 1, 1), reduction=3, extra=0, seed=0)  # N = 1, H = W = 1, C = r: hidden 1
@example(shape=(2, 2, 5), reduction=2, extra=1, seed=1)  # H != W, C // r with a remainder
def test_channel_attention_gradients(shape, reduction, extra, seed):
    """CAM: input and both shared-MLP weights, C = r * hidden + extra."""
    n, h, w = shape
    channels = reduction + extra
    rng = np.random.default_rng(seed)
    module = npcbam.ChannelAttention(channels, reduction, seed=rng)
    x = distinct_values(rng, (n, channels, h, w))
    assume(relu_margin(x, module.parameters()["mlp.0.weight"]) >= SAFE_MARGIN)
    assert_gradients_match(npcbam.check_gradients(module, x, seed=seed))


@given(shape=shapes, channels=st.integers(1, 4), kernel=st.sampled_from([1, 3, 5, 7]), seed=seeds)
@example(shape=(1, 1, 1), channels=1, kernel=7, seed=0)  # kernel larger than the map
@example(shape=(2, 3, 5), channels=3, kernel=3, seed=1)
def test_spatial_attention_gradients(shape, channels, kernel, seed):
    """SAM: input and the k x k conv weight, any C, k in {1, 3, 5, 7}."""
    n, h, w = shape
    rng = np.random.default_rng(seed)
    module = npcbam.SpatialAttention(kernel, seed=rng)
    x = distinct_values(rng, (n, channels, h, w))
    assert_gradients_match(npcbam.check_gradients(module, x, seed=seed))


@given(
    shape=shapes,
    reduction=st.integers(1, 3),
    extra=st.integers(0, 2),
    kernel=st.sampled_from([1, 3, 5, 7]),
    seed=seeds,
)
@example(shape=(1, 1, 1), reduction=2, extra=0, kernel=1, seed=0)  # N = 1, H = W = 1, C = r
@example(shape=(1, 4, 3), reduction=4, extra=0, kernel=7, seed=2)  # hidden width 1, H != W
@example(shape=(2, 5, 4), reduction=1, extra=2, kernel=5, seed=3)
def test_cbam_gradients(shape, reduction, extra, kernel, seed):
    """CBAM end to end: input, mlp.0.weight, mlp.2.weight and conv.weight."""
    n, h, w = shape
    channels = reduction + extra
    rng = np.random.default_rng(seed)
    module = npcbam.CBAM(channels, reduction, kernel, seed=rng)
    x = distinct_values(rng, (n, channels, h, w))
    module.forward(x)
    gated = module.channel_attention.intermediates()["output"]  # what the channel max sees
    assume(kink_margin(x, gated, module.parameters()["mlp.0.weight"]) >= SAFE_MARGIN)
    report = npcbam.check_gradients(module, x, seed=seed)
    assert [row.name for row in report.rows] == [
        "input",
        "mlp.0.weight",
        "mlp.2.weight",
        "conv.weight",
    ]
    assert_gradients_match(report)


def test_random_direction_mode_agrees_on_a_larger_cbam():
    """The random-direction mode (for tensors too large for the full mode) passes on a correct
    CBAM of realistic width, and uses the requested number of directions."""
    rng = np.random.default_rng(7)
    module = npcbam.CBAM(32, reduction=8, kernel_size=7, seed=rng)
    x = rng.standard_normal((2, 32, 8, 8))
    report = npcbam.check_gradients(module, x, mode="random", n_directions=6)
    assert all(row.mode == "random" and row.checked + row.kinks == 6 for row in report.rows)
    assert report.passed, str(report)
    assert report.max_rel_err <= MAX_REL_ERR


def test_check_leaves_module_as_it_was():
    """Parameters and gradient buffers are unchanged by a check (perturbations are undone)."""
    rng = np.random.default_rng(3)
    module = npcbam.CBAM(4, reduction=2, kernel_size=3, seed=rng)
    x = distinct_values(rng, (1, 4, 3, 3))
    module.forward(x)
    module.backward(rng.standard_normal(x.shape))
    before = module.state_dict()
    grads_before = {k: v.copy() for k, v in module.grads.items()}
    npcbam.check_gradients(module, x)
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
        np.testing.assert_array_equal(module.grads[name], grads_before[name])
