"""Options a timm or official-code user needs: the tie rule of the max poolings ("first" as
``torch.max(dim)`` / ``AdaptiveMaxPool2d``, "split" as ``torch.amax``), the spatial pooling
order and an explicit hidden width passed through CBAM, the spatial BatchNorm momentum; and
the seed code 2 cases ConvCBAM's docstring states."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from parity.stored import entries, load_fixture

from npcbam.nn import CBAM, OfficialCBAM, ResidualBlockCBAM, SpatialAttention
from npcbam.ops.conv import conv2d_forward
from npcbam.ops.pooling import (
    channel_max_pool_backward,
    channel_max_pool_forward,
    global_max_pool_backward,
    global_max_pool_forward,
)

HAS_TORCH = importlib.util.find_spec("torch") is not None
TIMM_FIXTURES = sorted((Path(__file__).parent / "parity" / "fixtures" / "timm").glob("*.npz"))


# -- the two tie rules on hand-made ties, values derived by hand ------------------------------
def test_global_max_ties_by_hand():
    x = np.array([[[[3.0, 1.0], [3.0, 0.0]], [[2.0, 2.0], [2.0, 2.0]]]])  # (1, 2, 2, 2)
    dout = np.array([[6.0, 8.0]])  # (N, C)
    expected = {
        # first: all to the first maximum in row-major order, (0, 0) in both channels
        "first": [[[[6.0, 0.0], [0.0, 0.0]], [[8.0, 0.0], [0.0, 0.0]]]],
        # split: 6 shared by the two 3s, 8 by the four 2s
        "split": [[[[3.0, 0.0], [3.0, 0.0]], [[2.0, 2.0], [2.0, 2.0]]]],
    }
    for ties, dx in expected.items():
        out, cache = global_max_pool_forward(x, ties=ties)
        np.testing.assert_array_equal(out, [[3.0, 2.0]])
        np.testing.assert_array_equal(global_max_pool_backward(dout, cache), dx)
        add_to = np.ones_like(x)
        global_max_pool_backward(dout, cache, add_to=add_to)
        np.testing.assert_array_equal(add_to, np.asarray(dx) + 1.0)


def test_channel_max_ties_by_hand():
    x = np.array([[[[2.0, 1.0]], [[5.0, 1.0]], [[5.0, 1.0]]]])  # (1, 3, 1, 2)
    dout = np.array([[[[6.0, 9.0]]]])  # (N, 1, H, W)
    expected = {
        "first": [[[[0.0, 9.0]], [[6.0, 0.0]], [[0.0, 0.0]]]],
        "split": [[[[0.0, 3.0]], [[3.0, 3.0]], [[3.0, 3.0]]]],
    }
    for ties, dx in expected.items():
        out, cache = channel_max_pool_forward(x, ties=ties)
        np.testing.assert_array_equal(out, [[[[5.0, 1.0]]]])
        np.testing.assert_array_equal(channel_max_pool_backward(dout, cache), dx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_keeps_the_dtype_and_matches_first_without_ties(dtype):
    x = np.random.default_rng(0).permutation(60).reshape(2, 3, 5, 2).astype(dtype)
    dout_global = np.random.default_rng(1).standard_normal((2, 3)).astype(dtype)
    dout_channel = np.random.default_rng(2).standard_normal((2, 1, 5, 2)).astype(dtype)
    for forward, backward, dout in [
        (global_max_pool_forward, global_max_pool_backward, dout_global),
        (channel_max_pool_forward, channel_max_pool_backward, dout_channel),
    ]:
        first = backward(dout, forward(x, ties="first")[1])
        split = backward(dout, forward(x, ties="split")[1])
        assert split.dtype == dtype
        np.testing.assert_array_equal(split, first)


@pytest.mark.parametrize("ties", ["last", None, "FIRST", 1])
def test_unknown_tie_rule_is_refused(ties):
    x = np.zeros((1, 2, 2, 2))
    for forward in (global_max_pool_forward, channel_max_pool_forward):
        with pytest.raises(ValueError, match=r"ties=.*expected 'first'"):
            forward(x, ties=ties)


# -- CBAM in timm's layout against PyTorch, stored and live -----------------------------------
def timm_cbam(fixture_or_state, ties):
    """npcbam's CBAM configured as timm's: (mean, max) spatial order, explicit hidden width."""
    state = fixture_or_state
    hidden, channels = state["mlp.0.weight"].shape[:2]
    module = CBAM(
        channels,
        kernel_size=state["conv.weight"].shape[-1],
        hidden=hidden,
        spatial_pool_order=("avg", "max"),
        max_ties=ties,
    )
    module.load_state_dict(state)
    return module


def run(module, x, dy):
    module.zero_grad()
    results = {"y": module.forward(x), "dx": module.backward(dy)}
    results.update({f"grad/{k}": g.copy() for k, g in module.grads.items()})
    return results


def test_timm_fixtures_exist_for_both_tie_rules():
    names = sorted(path.name for path in TIMM_FIXTURES)
    assert names == ["timm_ties_first_float64.npz", "timm_ties_split_float64.npz"], names
    first, split = (load_fixture(path) for path in TIMM_FIXTURES)
    # the ties matter to dx (the parameter gradients do not see them: the tied entries of the
    # channel max are zeros, whose share of the gate's gradient is zero whoever gets it)
    assert np.abs(first["dx"] - split["dx"]).max() > 1e-2


@pytest.mark.parametrize("path", TIMM_FIXTURES, ids=[p.stem for p in TIMM_FIXTURES])
def test_cbam_matches_torch_on_ties(path):
    fixture = load_fixture(path)
    ties = str(fixture["ties"])
    module = timm_cbam(entries(fixture, "state"), ties)
    results = run(module, fixture["x"], fixture["dy"])
    for key, value in results.items():
        np.testing.assert_allclose(value, fixture[key], rtol=1e-12, atol=1e-14, err_msg=key)
    # and the other rule does not match: the test can tell them apart
    other = run(timm_cbam(entries(fixture, "state"), "split" if ties == "first" else "first"),
                fixture["x"], fixture["dy"])  # fmt: skip
    assert np.abs(other["dx"] - fixture["dx"]).max() > 1e-3


@pytest.mark.skipif(not HAS_TORCH, reason="live PyTorch check (torch not installed)")
@pytest.mark.parametrize("ties", ["first", "split"])
@pytest.mark.parametrize("seed", range(4))
def test_cbam_matches_live_torch_on_random_ties(ties, seed):
    from parity.torch_timm import torch_timm_results

    rng = np.random.default_rng(seed)
    channels, hidden = 5, 3  # hidden width not 5 // r for any r
    state = {
        "mlp.0.weight": rng.standard_normal((hidden, channels, 1, 1)),
        "mlp.2.weight": rng.standard_normal((channels, hidden, 1, 1)),
        "conv.weight": rng.standard_normal((1, 2, 3, 3)),
    }
    x = rng.integers(-2, 3, size=(2, channels, 4, 3)).astype(np.float64)  # ties everywhere
    dy = rng.standard_normal(x.shape)
    expected = torch_timm_results(x, dy, state, ties)
    results = run(timm_cbam(state, ties), x, dy)
    for key, value in results.items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-10, atol=1e-12, err_msg=key)


def test_max_ties_and_pool_order_reach_the_children():
    module = CBAM(8, 2, 3, spatial_pool_order=("avg", "max"), max_ties="split", hidden=3)
    assert module.channel_attention.max_ties == module.spatial_attention.max_ties == "split"
    assert not module.spatial_attention.max_first
    assert module.state_dict()["mlp.0.weight"].shape == (3, 8, 1, 1)
    block = ResidualBlockCBAM(
        4, 4, attention="channel", attention_options={"hidden": 3, "max_ties": "split"}
    )
    assert block.attention.hidden == 3 and block.attention.max_ties == "split"
    block = ResidualBlockCBAM(
        4, 4, attention="spatial", attention_options={"spatial_pool_order": ("avg", "max")}
    )
    assert not block.attention.max_first


# -- the spatial BatchNorm momentum -----------------------------------------------------------
def spatial_batch_mean(spatial: SpatialAttention) -> np.ndarray:
    """The mean over (N, H, W) of the spatial conv's output (before BatchNorm), recomputed
    from the cached pooled maps: what the running mean moves towards."""
    pooled = spatial._map_cache.pooled
    weight = spatial.parameters()[spatial._weight_name]
    logits, _ = conv2d_forward(pooled, weight, None, padding=spatial.kernel_size // 2)
    return logits.mean(axis=(0, 2, 3))


@pytest.mark.parametrize(
    ("options", "momentum"),
    [
        ({}, 0.01),  # the official code's, as OfficialCBAM
        ({"spatial_bn_momentum": 0.1}, 0.1),  # timm's (PyTorch's default)
        ({"spatial_bn_momentum": 0.3}, 0.3),
    ],
)
def test_spatial_bn_momentum_after_a_step(options, momentum):
    rng = np.random.default_rng(7)
    module = CBAM(6, 2, 3, seed=rng, spatial_batchnorm=True, **options)
    x = rng.standard_normal((3, 6, 4, 5))
    module.forward(x)
    spatial = module.spatial_attention
    buffers = module.buffers()
    # from running_mean = 0 and running_var = 1
    np.testing.assert_allclose(
        buffers["bn.running_mean"], momentum * spatial_batch_mean(spatial), rtol=1e-12
    )
    assert int(buffers["bn.num_batches_tracked"]) == 1
    assert spatial.bn.momentum == momentum


def test_block_spatial_attention_uses_the_official_momentum():
    block = ResidualBlockCBAM(
        4, 4, attention="spatial", attention_options={"spatial_batchnorm": True}
    )
    official = OfficialCBAM(4, 2)
    assert block.attention.bn.momentum == official.spatial_gate.bn.momentum == 0.01
    block = ResidualBlockCBAM(
        4,
        4,
        attention="spatial",
        attention_options={"spatial_batchnorm": True, "spatial_bn_momentum": 0.1},
    )
    assert block.attention.bn.momentum == 0.1


# -- ConvCBAM and seed code 2's channel cases -------------------------------------------------
@pytest.mark.skipif(not HAS_TORCH, reason="live PyTorch check (torch not installed)")
@pytest.mark.parametrize(
    ("in_channels", "out_channels", "seed_runs"),
    [(3, 3, True), (1, 4, True), (4, 1, True), (2, 4, False), (4, 2, False)],
)
def test_conv_cbam_docstring_cases_of_the_seed(in_channels, out_channels, seed_runs):
    """The seed's spatial gate is repeated over the *input* channel count and then multiplied
    by broadcasting: it runs when in == out, when in == 1 (npcbam's result) and when out == 1
    (in copies of npcbam's result); otherwise it fails. Checked against a PyTorch forward
    with the seed's exact arithmetic."""
    import torch

    from npcbam.nn import ConvCBAM

    ours = ConvCBAM(in_channels, out_channels, r=1.0, seed=0)
    weights = {k: torch.from_numpy(v) for k, v in ours.state_dict().items()}
    x = np.random.default_rng(8).standard_normal((2, in_channels, 5, 6))

    def seed_forward(inputs):  # seed code 2's forward, term by term
        _, c, h, w = inputs.shape
        f = torch.nn.functional.conv2d(
            inputs, weights["conv1.weight"], weights["conv1.bias"], padding=1
        )

        def mlp(v):
            hidden = torch.relu(
                v @ weights["shared_mlp_cbam_1.weight"].T + weights["shared_mlp_cbam_1.bias"]
            )
            return (
                hidden @ weights["shared_mlp_cbam_2.weight"].T + weights["shared_mlp_cbam_2.bias"]
            )

        gate = torch.sigmoid(mlp(f.mean(dim=-1).mean(dim=-1)) + mlp(f.amax(dim=(2, 3))))
        fc = f * gate[:, :, None, None].repeat((1, 1, h, w))
        pooled = torch.cat((fc.mean(dim=1, keepdim=True), fc.max(dim=1, keepdim=True)[0]), dim=1)
        conv = torch.nn.functional.conv2d(
            pooled, weights["conv_cbam.weight"], weights["conv_cbam.bias"], padding=3
        )
        fs = torch.sigmoid(conv).repeat((1, c, 1, 1))
        return f + torch.mul(fc, fs)

    if not seed_runs:
        with pytest.raises(RuntimeError, match="must match the size"):
            seed_forward(torch.from_numpy(x))
        return
    y_seed = seed_forward(torch.from_numpy(x)).numpy()
    y = ours.forward(x)
    assert y.shape == (2, out_channels, 5, 6)
    assert y_seed.shape == (2, max(in_channels, out_channels), 5, 6)
    np.testing.assert_allclose(y_seed, np.broadcast_to(y, y_seed.shape), rtol=1e-12, atol=1e-14)
