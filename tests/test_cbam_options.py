"""CBAM's design-space options and ``OfficialCBAM`` (float64): finite differences for every
option, state-dict keys, semantics against hand computations, clear errors, and mutations.

The options of :class:`npcbam.CBAM`: ``arrangement`` ("channel-spatial", "spatial-channel",
"parallel": both maps from F, then M_s(F) ⊙ M_c(F) ⊙ F), ``pool_types`` (a non-empty subset
of avg, max, lp, lse, in any order), ``spatial_descriptor`` ("pool": max and mean over
channels; "conv": a learned 1×1 conv C -> 1), ``spatial_batchnorm`` (conv, BatchNorm, sigmoid;
checked in training and in evaluation mode), ``mlp_bias``, and any odd kernel.

Inputs are tie-free grids (``distinct_values``); ``assume()`` keeps every max and ReLU the
module actually evaluates at least SAFE_MARGIN from its kink: the global max over H×W and the
shared MLP's ReLU act on the channel attention's input, the max over channels on the spatial
attention's input, and which maps those are depends on the arrangement. The fixed cases below
*assert* their margin instead, so that none of them can be skipped silently.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    EXACT,
    MIN_BATCH_STD,
    SAFE_MARGIN,
    assert_gradients_match,
    distinct_values,
    seeds,
    smallest_batch_std,
    top2_gap,
)
from hypothesis import assume, given
from hypothesis import strategies as st

import npcbam
import npcbam.nn.channel_attention as channel_module
from npcbam.gradcheck import randomize_batchnorms
from npcbam.nn.cbam import ARRANGEMENTS
from npcbam.nn.channel_attention import POOL_TYPES
from npcbam.nn.residual import make_attention
from npcbam.nn.spatial_attention import DESCRIPTORS
from npcbam.ops.reference import conv2d_naive

MODES = ("train", "eval")
BATCHNORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
BUFFERS = BATCHNORM[2:]

# non-empty subsets of the four pool types, in any order (the order of the MLP outputs' sum)
pool_type_subsets = st.lists(
    st.sampled_from(POOL_TYPES), min_size=1, max_size=len(POOL_TYPES), unique=True
).map(tuple)
odd_kernels = st.sampled_from([1, 3, 5, 7])


# -- helpers ------------------------------------------------------------------------------------
def set_mode(module, mode: str):
    return module.train() if mode == "train" else module.eval()


def global_pool(x: np.ndarray, kind: str) -> np.ndarray:
    """(N, C, H, W) -> (N, C), each pooling written out with NumPy (independent of npcbam)."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    if kind == "avg":
        return flat.mean(axis=2)
    if kind == "max":
        return flat.max(axis=2)
    if kind == "lp":
        return np.sqrt((flat**2).sum(axis=2))
    top = flat.max(axis=2, keepdims=True)
    return (top + np.log(np.exp(flat - top).sum(axis=2, keepdims=True)))[:, :, 0]


def channel_kink_margin(x, pool_types, w_hidden, b_hidden) -> float:
    """How far channel attention on ``x`` is from its kinks: the top-2 gap of the global max
    (if max pooling is used), the smallest L2 norm of a channel (if L2 pooling is used: the
    norm has a kink at 0, and with H = W = 1 it is |x|) and the smallest |pre-activation| of
    the ReLU over every pooled branch (biases included)."""
    hidden, channels = w_hidden.shape[0], x.shape[1]
    w_hidden = w_hidden.reshape(hidden, channels)
    margins = [top2_gap(x, axis=(2, 3))] if "max" in pool_types else []
    if "lp" in pool_types:
        margins.append(float(global_pool(x, "lp").min()))
    for kind in pool_types:
        pre = global_pool(x, kind) @ w_hidden.T + (0.0 if b_hidden is None else b_hidden)
        margins.append(float(np.abs(pre).min()))
    return min(margins)


def attention_inputs(module: npcbam.CBAM, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """After ``module.forward(x)``: the input of its channel attention and of its spatial
    attention (the other's output in a sequential arrangement, x itself in the parallel one)."""
    if module.arrangement == "channel-spatial":
        return x, module.spatial_attention._cache.gate_cache.x
    if module.arrangement == "spatial-channel":
        return module.channel_attention._cache.gate_cache.x, x
    return x, x


def cbam_kink_margin(module: npcbam.CBAM, x: np.ndarray) -> float:
    """How far ``module`` at ``x`` is from every kink it meets (runs a forward)."""
    module.forward(x)
    channel_input, spatial_input = attention_inputs(module, x)
    params = module.parameters()
    margin = channel_kink_margin(
        channel_input, module.channel_attention.pool_types, params["mlp.0.weight"],
        params.get("mlp.0.bias"),
    )  # fmt: skip
    if module.spatial_attention.descriptor == "pool":
        margin = min(margin, top2_gap(spatial_input, axis=1))
    return margin


def official_kink_margin(module: npcbam.OfficialCBAM, x: np.ndarray) -> float:
    """How far ``module`` at ``x`` is from every kink it meets (runs a forward)."""
    module.forward(x)
    params = module.parameters()
    margin = channel_kink_margin(
        x, module.channel_gate.pool_types, params["ChannelGate.mlp.1.weight"],
        params["ChannelGate.mlp.1.bias"],
    )  # fmt: skip
    if module.spatial_gate is not None:
        refined = module.spatial_gate._cache.gate_cache.x  # the channel-gated map
        margin = min(margin, top2_gap(refined, axis=1))
    return margin


def build_cbam(channels, reduction, kernel, rng, mode="train", **options) -> npcbam.CBAM:
    module = npcbam.CBAM(channels, reduction, kernel, seed=rng, **options)
    randomize_batchnorms(module, rng)
    return set_mode(module, mode)


def expected_cbam_keys(spatial_descriptor="pool", spatial_batchnorm=False, mlp_bias=False, **_):
    """CBAM's state-dict keys for these options, in PyTorch's order."""
    keys = ["mlp.0.weight", *(["mlp.0.bias"] if mlp_bias else [])]
    keys += ["mlp.2.weight", *(["mlp.2.bias"] if mlp_bias else [])]
    keys += ["descriptor.weight"] if spatial_descriptor == "conv" else []
    keys += ["conv.weight"]
    keys += [f"bn.{name}" for name in BATCHNORM] if spatial_batchnorm else []
    return keys


def check_cbam(module, x, seed):
    """A clean gradient check: one row for the input and one per parameter (buffers get none),
    every entry compared, every one within the bound."""
    report = npcbam.check_gradients(module, x, seed=seed)
    assert [row.name for row in report.rows] == ["input", *module.parameters()]
    assert_gradients_match(report)
    return report


# -- finite differences: every option -----------------------------------------------------------
# (options, mode, kernel, seed): each option value once, the others at their defaults, plus all
# options at once in every arrangement.
EVERYTHING = {
    "pool_types": ("lse", "max", "lp", "avg"),
    "spatial_descriptor": "conv",
    "spatial_batchnorm": True,
    "mlp_bias": True,
}
# name -> (options, mode, kernel, seed); seeds chosen so that the margin assertion holds
OPTION_CASES = {
    "channel-spatial": ({"arrangement": "channel-spatial"}, "train", 3, 0),
    "spatial-channel": ({"arrangement": "spatial-channel"}, "train", 3, 0),
    "parallel": ({"arrangement": "parallel"}, "train", 3, 0),
    "pool_avg": ({"pool_types": ("avg",)}, "train", 3, 0),
    "pool_max": ({"pool_types": ("max",)}, "train", 3, 0),
    "pool_lp": ({"pool_types": ("lp",)}, "train", 3, 0),
    "pool_lse": ({"pool_types": ("lse",)}, "train", 3, 0),
    "pool_all_four": ({"pool_types": ("lp", "avg", "lse", "max")}, "train", 3, 2),
    "descriptor_conv": ({"spatial_descriptor": "conv"}, "train", 3, 0),
    "batchnorm_train": ({"spatial_batchnorm": True}, "train", 3, 1),
    "batchnorm_eval": ({"spatial_batchnorm": True}, "eval", 3, 1),
    "mlp_bias": ({"mlp_bias": True}, "train", 3, 1),
    "kernel_1": ({}, "train", 1, 0),
    "kernel_5": ({}, "train", 5, 0),
    "kernel_7": ({}, "train", 7, 2),
    "everything_channel-spatial_train": ({**EVERYTHING}, "train", 3, 0),
    "everything_channel-spatial_eval": ({**EVERYTHING}, "eval", 3, 0),
    "everything_spatial-channel_train":
        ({"arrangement": "spatial-channel", **EVERYTHING}, "train", 3, 1),
    "everything_spatial-channel_eval":
        ({"arrangement": "spatial-channel", **EVERYTHING}, "eval", 3, 0),
    "everything_parallel_train": ({"arrangement": "parallel", **EVERYTHING}, "train", 3, 0),
    "everything_parallel_eval": ({"arrangement": "parallel", **EVERYTHING}, "eval", 3, 0),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_each_option_gradients(case):
    """Every option value, checked on every element of the input and of every parameter."""
    options, mode, kernel, seed = OPTION_CASES[case]
    rng = np.random.default_rng(seed)
    module = build_cbam(4, 2, kernel, rng, mode, **options)
    x = distinct_values(rng, (2, 4, 3, 3))
    margin = cbam_kink_margin(module, x)
    assert margin >= SAFE_MARGIN, f"pick another seed: margin {margin:.3g}"
    report = check_cbam(module, x, seed)
    parameters = [k for k in expected_cbam_keys(**options) if k.split(".")[-1] not in BUFFERS]
    assert [row.name for row in report.rows] == ["input", *parameters]


@st.composite
def cbam_configs(draw):
    """Any combination of the options, C = reduction + extra, N, H, W small."""
    options = {
        "arrangement": draw(st.sampled_from(ARRANGEMENTS)),
        "pool_types": draw(pool_type_subsets),
        "spatial_descriptor": draw(st.sampled_from(DESCRIPTORS)),
        "spatial_batchnorm": draw(st.booleans()),
        "mlp_bias": draw(st.booleans()),
    }
    reduction = draw(st.integers(1, 3))
    channels = reduction + draw(st.integers(0, 2))
    shape = (draw(st.integers(1, 2)), channels, draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    mode = draw(st.sampled_from(MODES))
    if options["spatial_batchnorm"] and mode == "train":  # BatchNorm needs two values
        n, _, h, w = shape
        assume(n * h * w >= 2)
    return options, reduction, draw(odd_kernels), shape, mode


@given(config=cbam_configs(), seed=seeds)
def test_option_combination_gradients(config, seed):
    """Hypothesis draws the options together: every arrangement with every pool-type subset,
    descriptor, BatchNorm (train or eval) and bias setting, and any odd kernel."""
    options, reduction, kernel, shape, mode = config
    rng = np.random.default_rng(seed)
    module = build_cbam(shape[1], reduction, kernel, rng, mode, **options)
    x = distinct_values(rng, shape)
    assume(cbam_kink_margin(module, x) >= SAFE_MARGIN)
    check_cbam(module, x, seed)


# -- finite differences: OfficialCBAM -----------------------------------------------------------
# name -> (options, mode, seed); seeds chosen so that the margin assertion holds
OFFICIAL_CASES = {
    "default_train": ({}, "train", 1),
    "default_eval": ({}, "eval", 1),
    "all_four_train": ({"pool_types": ("avg", "max", "lp", "lse")}, "train", 0),
    "lse_eval": ({"pool_types": ("lse",)}, "eval", 0),
    "lp_max_no_spatial": ({"pool_types": ("lp", "max"), "no_spatial": True}, "train", 0),
}


def check_official(module, x, seed):
    """Like :func:`check_cbam`; the 7×7 conv weight (98 entries) is checked along 16 random
    directions (it acts after every kink, so no direction can cross one), the rest fully."""
    report = npcbam.check_gradients(module, x, seed=seed, max_full=64)
    assert [row.name for row in report.rows] == ["input", *module.parameters()]
    assert_gradients_match(report)
    return report


@pytest.mark.parametrize("case", sorted(OFFICIAL_CASES))
def test_official_cbam_gradients(case):
    options, mode, seed = OFFICIAL_CASES[case]
    rng = np.random.default_rng(seed)
    module = set_mode(npcbam.OfficialCBAM(6, 2, seed=rng, **options), mode)
    randomize_batchnorms(module, rng)
    x = distinct_values(rng, (2, 6, 3, 4))
    margin = official_kink_margin(module, x)
    assert margin >= SAFE_MARGIN, f"pick another seed: margin {margin:.3g}"
    check_official(module, x, seed)


@given(
    pool_types=pool_type_subsets,
    no_spatial=st.booleans(),
    reduction=st.integers(1, 3),
    extra=st.integers(0, 2),
    shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4)),
    mode=st.sampled_from(MODES),
    seed=seeds,
)
def test_official_cbam_option_gradients(
    pool_types, no_spatial, reduction, extra, shape, mode, seed
):
    """OfficialCBAM with any pool-type subset, with and without the spatial gate, in train and
    eval mode."""
    n, h, w = shape
    if not no_spatial and mode == "train":
        assume(n * h * w >= 2)
    channels = reduction + extra
    rng = np.random.default_rng(seed)
    module = npcbam.OfficialCBAM(
        channels, reduction, pool_types=pool_types, no_spatial=no_spatial, seed=rng
    )
    randomize_batchnorms(set_mode(module, mode), rng)
    x = distinct_values(rng, (n, channels, h, w))
    assume(official_kink_margin(module, x) >= SAFE_MARGIN)
    assume(smallest_batch_std(module) >= MIN_BATCH_STD)  # no steep BatchNorm: see helpers
    check_official(module, x, seed)


# -- state-dict keys ----------------------------------------------------------------------------
KEY_CASES = [
    {
        "arrangement": arrangement,
        "pool_types": POOL_TYPES[: 1 + i % 4],
        "spatial_descriptor": descriptor,
        "spatial_batchnorm": batchnorm,
        "mlp_bias": bias,
    }
    for i, (arrangement, descriptor, batchnorm, bias) in enumerate(
        (a, d, b, m)
        for a in ARRANGEMENTS
        for d in DESCRIPTORS
        for b in (False, True)
        for m in (False, True)
    )
]


@pytest.mark.parametrize(
    "options",
    KEY_CASES,
    ids=[
        f"{o['arrangement']}-{'+'.join(o['pool_types'])}-{o['spatial_descriptor']}"
        f"{'-bn' if o['spatial_batchnorm'] else ''}{'-bias' if o['mlp_bias'] else ''}"
        for o in KEY_CASES
    ],
)
def test_state_dict_keys_of_each_option(options):
    """``mlp.0.bias``/``mlp.2.bias`` iff mlp_bias; ``descriptor.weight`` (1, C, 1, 1) iff the
    conv descriptor, and then ``conv.weight`` is (1, 1, k, k) (else (1, 2, k, k)); ``bn.*``
    iff spatial_batchnorm; arrangement and pool types add no keys. Buffers get no gradient."""
    channels, reduction, kernel = 6, 3, 5
    module = npcbam.CBAM(channels, reduction, kernel, seed=0, **options)
    state = module.state_dict()
    assert list(state) == expected_cbam_keys(**options)
    hidden = channels // reduction
    shapes = {
        "mlp.0.weight": (hidden, channels, 1, 1),
        "mlp.0.bias": (hidden,),
        "mlp.2.weight": (channels, hidden, 1, 1),
        "mlp.2.bias": (channels,),
        "descriptor.weight": (1, channels, 1, 1),
        "conv.weight": (1, 1 if options["spatial_descriptor"] == "conv" else 2, kernel, kernel),
        **{f"bn.{name}": (1,) for name in BATCHNORM[:4]},
        "bn.num_batches_tracked": (),
    }
    assert {key: value.shape for key, value in state.items()} == {key: shapes[key] for key in state}
    assert set(module.grads) == set(module.parameters())
    assert set(module.buffers()) == {key for key in state if key.split(".")[-1] in BUFFERS}
    if options["spatial_batchnorm"]:
        assert state["bn.num_batches_tracked"].dtype == np.int64
    # a state of these options loads back; a state of other options is refused, naming keys
    twin = npcbam.CBAM(channels, reduction, kernel, seed=1, **options)
    twin.load_state_dict(state)
    for key, value in twin.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    other = {**options, "mlp_bias": not options["mlp_bias"]}
    with pytest.raises(ValueError, match=r"mlp\.0\.bias"):
        npcbam.CBAM(channels, reduction, kernel, **other).load_state_dict(state)


@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize("pool_types", [("avg", "max"), ("lse",), ("lp", "max", "avg", "lse")])
def test_official_cbam_state_dict_keys(pool_types, no_spatial):
    """The official module's keys and shapes, in PyTorch's order; no ``SpatialGate.*`` key
    without the spatial gate; the pool types add none."""
    module = npcbam.OfficialCBAM(12, 3, pool_types=pool_types, no_spatial=no_spatial, seed=0)
    expected = {
        "ChannelGate.mlp.1.weight": (4, 12),
        "ChannelGate.mlp.1.bias": (4,),
        "ChannelGate.mlp.3.weight": (12, 4),
        "ChannelGate.mlp.3.bias": (12,),
    }
    if not no_spatial:
        expected["SpatialGate.spatial.conv.weight"] = (1, 2, 7, 7)
        expected.update({f"SpatialGate.spatial.bn.{name}": (1,) for name in BATCHNORM[:4]})
        expected["SpatialGate.spatial.bn.num_batches_tracked"] = ()
    state = module.state_dict()
    assert list(state) == list(expected)
    assert {key: value.shape for key, value in state.items()} == expected


def test_options_in_residual_blocks_keep_their_prefix():
    """A block's attention options add their keys under the block's prefix."""
    options = {"spatial_descriptor": "conv", "spatial_batchnorm": True, "mlp_bias": True}
    block = npcbam.ResidualBlockCBAM(4, 4, reduction=2, attention_options=options, seed=0)
    cbam_keys = [key[len("cbam.") :] for key in block.state_dict() if key.startswith("cbam.")]
    assert cbam_keys == expected_cbam_keys(**options)
    channel = npcbam.ResidualBlockCBAM(
        4, 4, reduction=2, attention="channel", attention_options={"mlp_bias": True}, seed=0
    )
    assert "attention.mlp.0.bias" in channel.state_dict()
    spatial = npcbam.ResidualBlockCBAM(
        4, 4, attention="spatial", attention_options={"spatial_descriptor": "conv"}, seed=0
    )
    assert spatial.state_dict()["attention.descriptor.weight"].shape == (1, 4, 1, 1)


# -- semantics ----------------------------------------------------------------------------------
def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def channel_map_by_hand(x, state, pool_types) -> np.ndarray:
    """M_c = sigmoid(sum over pool types of W1 relu(W0 pool(x) + b0) + b1), (N, C, 1, 1)."""
    w0 = state["mlp.0.weight"][:, :, 0, 0]
    w1 = state["mlp.2.weight"][:, :, 0, 0]
    b0, b1 = state.get("mlp.0.bias", 0.0), state.get("mlp.2.bias", 0.0)
    logits = sum(
        np.maximum(global_pool(x, kind) @ w0.T + b0, 0.0) @ w1.T + b1 for kind in pool_types
    )
    return sigmoid(logits)[:, :, None, None]


def spatial_map_by_hand(x, state, descriptor, batchnorm, training, eps=1e-5) -> np.ndarray:
    """M_s = sigmoid([BN](conv_kxk(descriptor(x)))), (N, 1, H, W); the conv by its loop
    definition, BatchNorm with the batch's biased variance in training mode."""
    if descriptor == "pool":
        described = np.concatenate([x.max(axis=1, keepdims=True), x.mean(axis=1, keepdims=True)], 1)
    else:
        described = np.einsum("nchw,c->nhw", x, state["descriptor.weight"][0, :, 0, 0])[:, None]
    weight = state["conv.weight"]
    pad = weight.shape[-1] // 2
    logits = conv2d_naive(described, weight, padding=(pad, pad))
    if batchnorm:
        if training:
            mean, var = logits.mean(), logits.var()
        else:
            mean, var = state["bn.running_mean"], state["bn.running_var"]
        logits = (logits - mean) / np.sqrt(var + eps) * state["bn.weight"] + state["bn.bias"]
    return sigmoid(logits)


def cbam_by_hand(x, state, options, training):
    """CBAM's output and its two maps for any arrangement, from the equations."""
    pool_types = options.get("pool_types", ("avg", "max"))
    descriptor = options.get("spatial_descriptor", "pool")
    batchnorm = options.get("spatial_batchnorm", False)

    def channel(f):
        return channel_map_by_hand(f, state, pool_types)

    def spatial(f):
        return spatial_map_by_hand(f, state, descriptor, batchnorm, training)

    arrangement = options.get("arrangement", "channel-spatial")
    if arrangement == "channel-spatial":
        m_c = channel(x)
        m_s = spatial(m_c * x)
        return m_s * (m_c * x), m_c, m_s
    if arrangement == "spatial-channel":
        m_s = spatial(x)
        m_c = channel(m_s * x)
        return m_c * (m_s * x), m_c, m_s
    m_c, m_s = channel(x), spatial(x)  # parallel: both maps from F
    return m_s * m_c * x, m_c, m_s


@given(config=cbam_configs(), seed=seeds)
def test_cbam_equals_its_equations(config, seed):
    """Every option combination computes what its equations say, maps included: in
    particular "parallel" is M_s(F) ⊙ M_c(F) ⊙ F with both maps computed from F, and
    "spatial-channel" is M_c(F') ⊙ F' with F' = M_s(F) ⊙ F."""
    options, reduction, kernel, shape, mode = config
    rng = np.random.default_rng(seed)
    module = build_cbam(shape[1], reduction, kernel, rng, mode, **options)
    x = rng.standard_normal(shape)
    state = module.state_dict()
    y = module.forward(x)
    expected, m_c, m_s = cbam_by_hand(x, state, options, mode == "train")
    np.testing.assert_allclose(y, expected, **EXACT)
    np.testing.assert_allclose(module.channel_map, m_c, **EXACT)
    np.testing.assert_allclose(module.spatial_map, m_s, **EXACT)


def test_parallel_maps_both_come_from_the_input():
    """The parallel arrangement's spatial map is SpatialAttention's map of F itself (not of
    the channel-refined F'), its channel map ChannelAttention's map of F; the output is their
    product with F, which differs from both sequential arrangements."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 4, 5))
    options = {"pool_types": ("max", "lse"), "spatial_descriptor": "pool", "mlp_bias": True}
    module = npcbam.CBAM(6, 2, 3, seed=1, arrangement="parallel", **options)
    state = module.state_dict()
    y = module.forward(x)
    channel_map = channel_map_by_hand(x, state, options["pool_types"])
    spatial_map = spatial_map_by_hand(x, state, "pool", False, True)
    np.testing.assert_allclose(module.channel_map, channel_map, **EXACT)
    np.testing.assert_allclose(module.spatial_map, spatial_map, **EXACT)
    np.testing.assert_allclose(y, spatial_map * channel_map * x, **EXACT)
    for arrangement in ("channel-spatial", "spatial-channel"):
        sequential = npcbam.CBAM(6, 2, 3, arrangement=arrangement, **options)
        sequential.load_state_dict(state)
        assert np.abs(sequential.forward(x) - y).max() > 1e-3, arrangement


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("descriptor", DESCRIPTORS)
def test_spatial_channel_is_spatial_then_channel_attention(descriptor, mode):
    """The "spatial-channel" arrangement is SpatialAttention, then ChannelAttention, applied
    by hand with the same weights: the same output, maps, input and parameter gradients, and
    BatchNorm buffers."""
    rng = np.random.default_rng(3)
    options = {
        "pool_types": ("lp", "avg", "max"),
        "spatial_descriptor": descriptor,
        "spatial_batchnorm": True,
        "mlp_bias": True,
    }
    module = build_cbam(6, 3, 5, rng, mode, arrangement="spatial-channel", **options)
    state = module.state_dict()
    spatial = npcbam.SpatialAttention(5, descriptor=descriptor, channels=6, batchnorm=True)
    channel = npcbam.ChannelAttention(6, 3, pool_types=options["pool_types"], bias=True)
    spatial.load_state_dict({k: v for k, v in state.items() if not k.startswith("mlp.")})
    channel.load_state_dict({k: v for k, v in state.items() if k.startswith("mlp.")})
    set_mode(spatial, mode)
    x = rng.standard_normal((2, 6, 4, 3))
    dy = rng.standard_normal(x.shape)

    y = module.forward(x)
    expected = channel.forward(spatial.forward(x))
    np.testing.assert_allclose(y, expected, **EXACT)
    np.testing.assert_allclose(module.spatial_map, spatial.spatial_map, **EXACT)
    np.testing.assert_allclose(module.channel_map, channel.channel_map, **EXACT)
    module.zero_grad()
    dx = module.backward(dy)
    np.testing.assert_allclose(dx, spatial.backward(channel.backward(dy)), **EXACT)
    by_hand = {**spatial.grads, **channel.grads}
    assert set(module.grads) == set(by_hand)
    for key, grad in module.grads.items():
        np.testing.assert_allclose(grad, by_hand[key], **EXACT, err_msg=key)
    for key, value in module.buffers().items():
        np.testing.assert_array_equal(value, spatial.buffers()[key])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pool_types", [("avg", "max"), ("lse", "lp"), ("max", "avg", "lp", "lse")])
def test_official_cbam_is_cbam_with_options(pool_types, mode):
    """OfficialCBAM computes CBAM with biased MLP, these pool types, spatial BatchNorm and a
    7×7 kernel (the same weights under other names), and the same BatchNorm momentum (0.01,
    the official code's): their running statistics agree after a training step too."""
    rng = np.random.default_rng(4)
    official = npcbam.OfficialCBAM(8, 2, pool_types=pool_types, seed=rng)
    randomize_batchnorms(set_mode(official, mode), rng)
    cbam = npcbam.CBAM(8, 2, 7, pool_types=pool_types, spatial_batchnorm=True, mlp_bias=True)
    names = dict(
        zip(
            official.state_dict(),
            ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "conv.weight",
             *(f"bn.{name}" for name in BATCHNORM)],
        )
    )  # fmt: skip
    cbam.load_state_dict(
        {
            names[k]: v.reshape(cbam.state_dict()[names[k]].shape)
            for k, v in official.state_dict().items()
        }
    )
    set_mode(cbam, mode)
    x = rng.standard_normal((2, 8, 5, 3))
    dy = rng.standard_normal(x.shape)
    np.testing.assert_allclose(official.forward(x), cbam.forward(x), **EXACT)
    np.testing.assert_allclose(official.backward(dy), cbam.backward(dy), **EXACT)
    for key, grad in official.grads.items():
        np.testing.assert_allclose(grad.reshape(-1), cbam.grads[names[key]].reshape(-1), **EXACT)
    for key, value in official.buffers().items():
        np.testing.assert_allclose(cbam.buffers()[names[key]], value, **EXACT, err_msg=key)


@pytest.mark.parametrize("arrangement", ["channel-spatial", "spatial-channel", "parallel"])
def test_intermediates_describe_the_last_forward(arrangement):
    """``intermediates()`` after a forward: its first step is the input F and its last the
    output, whatever the arrangement."""
    rng = np.random.default_rng(5)
    module = npcbam.CBAM(4, 2, 3, seed=rng, arrangement=arrangement)
    x = rng.standard_normal((2, 4, 3, 5))
    y = module.forward(x)
    steps = list(module.intermediates().values())
    np.testing.assert_array_equal(steps[0], x)
    np.testing.assert_allclose(steps[-1], y, **EXACT)


# -- clear errors -------------------------------------------------------------------------------
def residual(attention, **options):
    return npcbam.ResidualBlockCBAM(
        4, 4, reduction=2, attention=attention, attention_options=options
    )


# id -> (constructor call, pattern the message must match: it names the offending value)
NONSENSE = {
    "unknown_pool_type": (lambda: npcbam.CBAM(8, 2, 3, pool_types=("avg", "median")), "median"),
    "unknown_pool_type_as_str": (lambda: npcbam.CBAM(8, 2, 3, pool_types="median"), "median"),
    "empty_pool_types": (lambda: npcbam.CBAM(8, 2, 3, pool_types=()), r"pool_types=\(\)"),
    "empty_pool_types_list": (lambda: npcbam.CBAM(8, 2, 3, pool_types=[]), r"pool_types=\(\)"),
    "repeated_pool_type": (
        lambda: npcbam.CBAM(8, 2, 3, pool_types=("max", "lse", "max")),
        "'max', 'lse', 'max'",
    ),
    "even_kernel": (lambda: npcbam.CBAM(8, 2, 4), "kernel_size=4 is even"),
    "unknown_arrangement": (
        lambda: npcbam.CBAM(8, 2, 3, arrangement="serial"),
        "arrangement='serial'",
    ),
    "arrangement_wrong_case": (
        lambda: npcbam.CBAM(8, 2, 3, arrangement="Parallel"),
        "arrangement='Parallel'",
    ),
    "unknown_descriptor": (
        lambda: npcbam.CBAM(8, 2, 3, spatial_descriptor="gap"),
        "descriptor='gap'",
    ),
    "conv_descriptor_without_channels": (
        lambda: npcbam.SpatialAttention(3, descriptor="conv"),
        "descriptor='conv'.*channels",
    ),
    "even_kernel_spatial": (
        lambda: npcbam.SpatialAttention(4, descriptor="conv", channels=2),
        "kernel_size=4",
    ),
    "bias_with_batchnorm": (
        lambda: npcbam.SpatialAttention(3, bias=True, batchnorm=True),
        "bias=True with batchnorm=True",
    ),
    "channel_attention_unknown_pool": (
        lambda: npcbam.ChannelAttention(8, 2, pool_types=("avg", "l2")),
        "l2",
    ),
    "official_unknown_pool": (
        lambda: npcbam.OfficialCBAM(8, 2, pool_types=("avg", "lp2")),
        "lp2",
    ),
    "official_repeated_pool": (
        lambda: npcbam.OfficialCBAM(8, 2, pool_types=("lse", "lse")),
        "'lse', 'lse'",
    ),
    "official_no_hidden_units": (lambda: npcbam.OfficialCBAM(8, 16), "8 // 16 = 0"),
    "none_with_options": (
        lambda: make_attention("none", 8, 2, 3, None, {"mlp_bias": True}),
        "attention='none' takes no options.*mlp_bias",
    ),
    "channel_with_arrangement": (
        lambda: make_attention("channel", 8, 2, 3, None, {"arrangement": "parallel"}),
        "attention='channel'.*arrangement",
    ),
    "channel_with_spatial_option": (
        lambda: make_attention("channel", 8, 2, 3, None, {"spatial_batchnorm": True}),
        "attention='channel'.*spatial_batchnorm",
    ),
    "spatial_with_pool_types": (
        lambda: make_attention("spatial", 8, 2, 3, None, {"pool_types": ("lse",)}),
        "attention='spatial'.*pool_types",
    ),
    "cbam_misspelt_option": (
        lambda: make_attention("cbam", 8, 2, 3, None, {"pool_type": ("lse",)}),
        "pool_type",
    ),
    "block_none_with_options": (lambda: residual("none", mlp_bias=True), "mlp_bias"),
    "block_spatial_with_mlp_bias": (
        lambda: residual("spatial", mlp_bias=True),
        "attention='spatial'.*mlp_bias",
    ),
    "block_unknown_pool": (lambda: residual("cbam", pool_types=("mean",)), "mean"),
}


@pytest.mark.parametrize("case", sorted(NONSENSE))
def test_nonsense_options_fail_clearly(case):
    """Each nonsense option raises at construction, and the message names the value."""
    build, message = NONSENSE[case]
    with pytest.raises((ValueError, TypeError), match=message):
        build()


# -- mutations: the checker catches the classic bugs of the new code paths ----------------------
def live_case(pool_types, arrangement="channel-spatial", mlp_bias=False, seed=11):
    """A CBAM and a positive tie-free input on which every hidden unit of the shared MLP is
    active in every pooled branch (|W0| and |b0| with a positive input): a dead branch would
    hide a dropped gradient. The margin is asserted, not assumed."""
    rng = np.random.default_rng(seed)
    module = npcbam.CBAM(
        4, 2, 3, seed=rng, arrangement=arrangement, pool_types=pool_types, mlp_bias=mlp_bias
    )
    for name, value in module.parameters().items():
        if name.startswith("mlp.0."):
            value[:] = np.abs(value) + 0.1
    x = 1.5 + distinct_values(rng, (2, 4, 3, 4), scale=1.0)  # entries in [0.5, 2.5]
    assert cbam_kink_margin(module, x) >= SAFE_MARGIN
    relu_masks = [v for k, v in module.winners().items() if "relu" in k]
    assert len(relu_masks) == len(pool_types) and all(mask.all() for mask in relu_masks)
    return module, x


def failing_rows(module, x) -> set[str]:
    report = npcbam.check_gradients(module, x)
    assert report.kinks == 0, str(report)
    return {row.name for row in report.rows if not row.passed}


# name -> (pool types, arrangement, mlp_bias): the cases the mutations below use
LIVE_CASES = {
    "parallel_all_four": (POOL_TYPES, "parallel", False),
    "four_branches_with_bias": (("lse", "avg", "lp", "max"), "channel-spatial", True),
    "lp_max": (("lp", "max"), "channel-spatial", False),
    "lse_max": (("lse", "max"), "channel-spatial", False),
}


@pytest.mark.parametrize("case", sorted(LIVE_CASES))
def test_unmutated_live_cases_pass(case):
    """The baselines of the mutations below: the correct backward passes on these inputs."""
    pool_types, arrangement, bias = LIVE_CASES[case]
    assert failing_rows(*live_case(pool_types, arrangement, bias)) == set()


def test_parallel_without_the_spatial_maps_input_gradient_fails(monkeypatch):
    """In the parallel arrangement F is used by both maps and by the gates; dropping the
    spatial map's contribution to dL/dF (its parameter gradient still accumulated) fails the
    input row only."""
    module, x = live_case(*LIVE_CASES["parallel_all_four"])
    original = npcbam.SpatialAttention.map_backward

    def dropped(self, dspatial_map, add_to):
        original(self, dspatial_map, add_to=np.zeros_like(add_to))  # weights only
        return add_to

    monkeypatch.setattr(npcbam.SpatialAttention, "map_backward", dropped)
    assert failing_rows(module, x) == {"input"}


def test_only_the_first_pool_types_mlp_gradient_fails(monkeypatch):
    """The shared MLP runs once per pool type; keeping the weight and bias gradients of the
    first use only (an ``=`` where ``+=`` belongs) fails every MLP row, while the input
    gradient, which flows through every branch correctly, passes."""
    pool_types = LIVE_CASES["four_branches_with_bias"][0]
    module, x = live_case(*LIVE_CASES["four_branches_with_bias"])
    original = channel_module.shared_mlp_backward
    calls = []

    def first_only(dout, cache):
        dv, *grads = original(dout, cache)
        calls.append(1)
        if len(calls) % len(pool_types) != 1:  # not the first pool type of this backward
            grads = [np.zeros_like(g) for g in grads]
        return (dv, *grads)

    monkeypatch.setattr(channel_module, "shared_mlp_backward", first_only)
    assert failing_rows(module, x) == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}


@pytest.mark.parametrize("kind", ["lp", "lse"])
def test_smooth_pooling_backward_as_average_fails(kind, monkeypatch):
    """Replacing the L2 or log-sum-exp pooling's backward by the average pooling's (a uniform
    share instead of x / norm or the softmax) fails the input row."""
    module, x = live_case(*LIVE_CASES[f"{kind}_max"])

    def uniform(dout, cache, add_to):
        h, w = add_to.shape[2:]
        add_to += dout[:, :, None, None] / (h * w)
        return add_to

    monkeypatch.setattr(channel_module, f"global_{kind}_pool_backward", uniform)
    assert failing_rows(module, x) == {"input"}
