"""The module protocol's promises under stress: a rejected backward changes no gradient
anywhere in the tree, the cache never aliases the caller's input, state dicts and constructor
arguments are checked with errors that name what the user wrote, and a backward after a failed
forward says so."""

import numpy as np
import pytest

import npcbam
from npcbam.nn import (
    CBAM,
    AttentionClassifier,
    BatchNorm2d,
    ChannelAttention,
    Conv2d,
    ConvCBAM,
    OfficialCBAM,
    ReLU,
    ResidualBlockCBAM,
    ResnetFPN4CBAM,
    Sequential,
    SpatialAttention,
)

# name -> (builder, input shape); every container of npcbam and every attention module
MODULES = {
    "channel": (lambda: ChannelAttention(6, 2, seed=0), (2, 6, 5, 4)),
    "channel_lp_lse": (
        lambda: ChannelAttention(6, 2, seed=0, pool_types=("lp", "max", "lse"), bias=True),
        (2, 6, 5, 4),
    ),
    "spatial": (lambda: SpatialAttention(3, seed=0), (2, 6, 5, 4)),
    "spatial_bn": (lambda: SpatialAttention(3, seed=0, batchnorm=True), (2, 6, 5, 4)),
    "cbam": (lambda: CBAM(6, 2, 3, seed=0), (2, 6, 5, 4)),
    "cbam_spatial_channel": (
        lambda: CBAM(6, 2, 3, seed=0, arrangement="spatial-channel", spatial_batchnorm=True),
        (2, 6, 5, 4),
    ),
    "cbam_parallel": (
        lambda: CBAM(6, 2, 3, seed=0, arrangement="parallel", spatial_descriptor="conv"),
        (2, 6, 5, 4),
    ),
    "official": (lambda: OfficialCBAM(6, 2, seed=0), (2, 6, 5, 4)),
    "conv_cbam": (lambda: ConvCBAM(3, 6, seed=0), (2, 3, 5, 4)),
    "sequential": (
        lambda: Sequential(Conv2d(3, 4, 3, padding=1, seed=0), BatchNorm2d(4), ReLU()),
        (2, 3, 5, 4),
    ),
    "residual": (
        lambda: ResidualBlockCBAM(4, 6, stride=2, reduction=2, kernel_size=3, seed=0),
        (2, 4, 6, 6),
    ),
    "fpn": (lambda: ResnetFPN4CBAM(2, reduction=2, kernel_size=3, seed=0), (2, 2, 8, 8)),
    "classifier": (
        lambda: AttentionClassifier(3, 4, widths=(4, 8), reduction=2, kernel_size=3, seed=0),
        (2, 3, 8, 8),
    ),
}
ATTENTION = ["channel", "spatial", "cbam", "official", "conv_cbam", "residual"]


def full_snapshot(module):
    """Everything a refused call must leave as it was: state (parameters and buffers),
    gradients, each module's mode and retained tensors."""
    return {
        "state": module.state_dict(),
        "grads": {name: grad.copy() for name, grad in module.grads.items()},
        "modes": {path: sub.training for path, sub in module.named_modules()},
        "retained": {
            path: {key: value.copy() for key, value in sub._retained.items()}
            for path, sub in module.named_modules()
            if sub._retained is not None
        },
    }


def assert_same(module, before):
    after = full_snapshot(module)
    assert after["modes"] == before["modes"]
    for table in ("state", "grads"):
        assert list(after[table]) == list(before[table])
        for name, value in before[table].items():
            assert after[table][name].dtype == value.dtype, name
            np.testing.assert_array_equal(after[table][name], value, err_msg=f"{table} {name}")
    assert after["retained"].keys() == before["retained"].keys()
    for path, retained in before["retained"].items():
        assert after["retained"][path].keys() == retained.keys(), path
        for key, value in retained.items():
            np.testing.assert_array_equal(after["retained"][path][key], value)


def stepped(name, seed=1, retain=True):
    """A module after one forward and backward, with non-zero gradients everywhere (so that
    "unchanged" cannot mean "still zero") and every module retaining its output and output
    gradient (``retain``)."""
    build, shape = MODULES[name]
    module = build()
    rng = np.random.default_rng(seed)
    for _, sub in module.named_modules():
        sub.retain_io(retain)
    x = rng.standard_normal(shape)
    y = module.forward(x)
    module.backward(rng.standard_normal(y.shape))
    for grad in module.grads.values():
        grad += rng.standard_normal(grad.shape)
    return module, x, y


# -- item 1: a rejected backward changes no gradient ------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["first", "last", "middle"])
@pytest.mark.parametrize("retain", [False, True], ids=["grads", "retained"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_rejected_backward_leaves_every_gradient_unchanged(name, retain, where, bad):
    module, _, y = stepped(name, retain=retain)
    dy = np.random.default_rng(2).standard_normal(y.shape)
    index = {"first": 0, "last": dy.size - 1, "middle": dy.size // 2}[where]
    dy.reshape(-1)[index] = bad
    before = full_snapshot(module)
    with pytest.raises(ValueError, match=r"dy holds 1 non-finite value"):
        module.backward(dy)
    assert_same(module, before)


@pytest.mark.parametrize("name", sorted(name for name in MODULES if name != "channel"))
def test_failure_deep_inside_backward_restores_the_whole_tree(name, monkeypatch):
    """Whatever raises inside a backward (here a planted failure in the module that runs
    last, so every other one has accumulated by then), every gradient is put back."""
    module, _, y = stepped(name)
    leaves = [sub for _, sub in module.named_modules() if sub._params and sub is not module]
    if not leaves:  # a module without children: its own backward fails after its work
        leaves = [module]
    first_forward = leaves[0]  # runs first in forward: last in backward

    class Boom(Exception):
        pass

    def planted(original):
        def fail(*args, **kwargs):
            original(*args, **kwargs)  # accumulates, then fails
            raise Boom("planted")

        return fail

    # CBAM's parallel arrangement calls map_backward instead of backward
    for method in ("_backward", "map_backward"):
        if hasattr(first_forward, method):
            monkeypatch.setattr(first_forward, method, planted(getattr(first_forward, method)))
    dy = np.random.default_rng(3).standard_normal(y.shape)
    before = full_snapshot(module)
    with pytest.raises(Boom):
        module.backward(dy)
    assert_same(module, before)


# -- item 4: the cache does not alias x -------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_changing_x_in_place_after_forward_changes_nothing(name, dtype):
    build, shape = MODULES[name]
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(dtype)
    dy = None
    results = []
    for change in (False, True):
        module = build()
        x_used = x.copy()
        y = module.forward(x_used)
        if dy is None:
            dy = rng.standard_normal(y.shape).astype(dtype)
        if change:
            x_used *= -3.0  # in place, between forward and backward
            x_used += 1.0
        dx = module.backward(dy)
        results.append((dx, {k: g.copy() for k, g in module.grads.items()}))
    (dx_plain, grads_plain), (dx_changed, grads_changed) = results
    np.testing.assert_array_equal(dx_changed, dx_plain)
    for key, grad in grads_plain.items():
        np.testing.assert_array_equal(grads_changed[key], grad, err_msg=key)


def test_forward_keeps_its_own_copy_in_the_cache():
    module = CBAM(6, 2, 3, seed=0)
    x = np.random.default_rng(5).standard_normal((2, 6, 5, 4))
    module.forward(x)
    assert not np.shares_memory(module.intermediates()["input"], x)


# -- item 5: state dicts ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad", [None, [("conv.weight", np.zeros((1, 2, 3, 3)))], 3.0, "conv.weight", np.zeros(3)]
)
def test_load_state_dict_needs_a_mapping(bad):
    module, _, _ = stepped("cbam")
    before = full_snapshot(module)
    with pytest.raises(TypeError, match=r"state_dict must be a mapping of parameter name -> array"):
        module.load_state_dict(bad)
    assert_same(module, before)


def bn_state(**changes):
    module = SpatialAttention(3, seed=0, batchnorm=True)
    state = module.state_dict()
    state.update(changes)
    return module, state


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.array(-5), r"num_batches_tracked: holds negative values; a count is >= 0"),
        (np.array(-1, dtype=np.int8), r"num_batches_tracked: holds negative values"),
        (
            np.array(np.iinfo(np.uint64).max, dtype=np.uint64),
            r"num_batches_tracked: holds values outside int64's range",
        ),
        (np.array(2**63, dtype=np.uint64), r"outside int64's range"),
    ],
)
def test_num_batches_tracked_out_of_range_is_refused(value, message):
    module, state = bn_state(**{"bn.num_batches_tracked": value})
    before = full_snapshot(module)
    with pytest.raises(ValueError, match=message):
        module.load_state_dict(state)
    assert_same(module, before)


def test_num_batches_tracked_in_range_loads_exactly():
    big = np.array(np.iinfo(np.int64).max, dtype=np.int64)
    for value in (np.array(7, dtype=np.uint64), np.array(7, dtype=np.int32), big):
        module, state = bn_state(**{"bn.num_batches_tracked": value})
        module.load_state_dict(state)
        stored = module.buffers()["bn.num_batches_tracked"]
        assert stored.dtype == np.int64 and int(stored) == int(value)


def test_masked_array_is_refused():
    module = CBAM(6, 2, 3, seed=0)
    state = module.state_dict()
    weight = state["conv.weight"]
    state["conv.weight"] = np.ma.masked_array(weight + 1.0, mask=np.zeros(weight.shape, bool))
    state["conv.weight"].mask[0, 0, 0, 0] = True
    before = full_snapshot(module)
    with pytest.raises(ValueError, match=r"conv\.weight: a masked array"):
        module.load_state_dict(state)
    assert_same(module, before)


def test_ragged_and_odd_keys_give_a_collected_error():
    module = CBAM(6, 2, 3, seed=0)
    state = module.state_dict()
    state["conv.weight"] = [[1.0], [1.0, 2.0]]  # ragged: not an array
    state[3] = np.zeros(1)  # a non-string key
    before = full_snapshot(module)
    with pytest.raises(ValueError, match=r"(?s)unexpected keys: \[3\].*conv\.weight: not conv"):
        module.load_state_dict(state)
    assert_same(module, before)


# -- item 11: backward after a failed forward -------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODULES))
def test_backward_after_a_failed_first_forward_says_so(name):
    build, shape = MODULES[name]
    module = build()
    x = np.random.default_rng(6).standard_normal(shape)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        module.forward(x)
    with pytest.raises(RuntimeError, match=r"the last forward\(\) through it failed \(ValueError"):
        module.backward(np.zeros(shape))
    y = module.forward(np.nan_to_num(x))  # a good forward clears it
    assert module.backward(np.ones_like(y)).shape == shape


def test_backward_before_any_forward_still_says_so():
    with pytest.raises(RuntimeError, match=r"backward\(\) called before any forward\(\)"):
        CBAM(6, 2, 3).backward(np.zeros((1, 6, 2, 2)))


# -- item 7: constructor arguments ------------------------------------------------------------
HUGE = 2**70
# id -> (call, error type, pattern: the message names the parameter as the user spelled it)
BAD_CALLS = {
    "cbam_mlp_bias_str": (lambda: CBAM(8, 2, mlp_bias="no"), TypeError, r"^mlp_bias must be True"),
    "cbam_bn_str": (
        lambda: CBAM(8, 2, spatial_batchnorm="False"),
        TypeError,
        r"^spatial_batchnorm must be True or False, got 'False'",
    ),
    "cbam_descriptor": (
        lambda: CBAM(8, 2, spatial_descriptor="conv2"),
        ValueError,
        r"^spatial_descriptor='conv2'",
    ),
    "cbam_pool_order": (
        lambda: CBAM(8, 2, spatial_pool_order=("avg", "avg")),
        ValueError,
        r"^spatial_pool_order=",
    ),
    "cbam_pool_types_number": (lambda: CBAM(8, 2, pool_types=3), TypeError, r"^pool_types must"),
    "cbam_huge_channels": (lambda: CBAM(HUGE), ValueError, r"^channels must be <= 65536"),
    "cbam_huge_reduction_float": (
        lambda: CBAM(8, 1e308),
        TypeError,
        r"^reduction must be an integer, got 1e\+308",
    ),
    "cbam_huge_kernel": (lambda: CBAM(8, 2, HUGE + 1), ValueError, r"^kernel_size must be <="),
    "cbam_seed_str": (lambda: CBAM(8, 2, seed="abc"), TypeError, r"^seed must be an integer"),
    "cbam_seed_negative": (lambda: CBAM(8, 2, seed=-1), ValueError, r"^seed must be >= 0"),
    "cbam_seed_float": (lambda: CBAM(8, 2, seed=1.5), TypeError, r"^seed must be an integer"),
    "cbam_momentum_without_bn": (
        lambda: CBAM(8, 2, spatial_bn_momentum=0.1),
        ValueError,
        r"^spatial_bn_momentum=0\.1 needs spatial_batchnorm=True",
    ),
    "cbam_momentum_range": (
        lambda: CBAM(8, 2, spatial_batchnorm=True, spatial_bn_momentum=1.5),
        ValueError,
        r"^spatial_bn_momentum must be a number in \[0, 1\]",
    ),
    "cbam_hidden_zero": (lambda: CBAM(8, 2, hidden=0), ValueError, r"^hidden must be >= 1"),
    "cbam_ties": (lambda: CBAM(8, 2, max_ties="last"), ValueError, r"^ties='last'"),
    "cbam_huge_parameter": (
        lambda: CBAM(2**16, 1),
        ValueError,
        r"would have shape \(65536, 65536, 1, 1\)",
    ),
    "channel_bias_str": (
        lambda: ChannelAttention(8, 2, bias="no"),
        TypeError,
        r"^bias must be True or False",
    ),
    "channel_layer_names_repeat": (
        lambda: ChannelAttention(8, 2, layer_names=("fc", "fc")),
        ValueError,
        r"^layer_names=\('fc', 'fc'\) repeats a name",
    ),
    "channel_layer_names_length": (
        lambda: ChannelAttention(8, 2, layer_names=("a", "b", "c")),
        ValueError,
        r"^layer_names=.*expected 2 non-empty strings",
    ),
    "channel_layer_names_str": (
        lambda: ChannelAttention(8, 2, layer_names="ab"),
        TypeError,
        r"^layer_names must be a tuple of 2 strings",
    ),
    "channel_huge": (lambda: ChannelAttention(HUGE), ValueError, r"^channels must be <="),
    "spatial_batchnorm_str": (
        lambda: SpatialAttention(3, batchnorm="yes"),
        TypeError,
        r"^batchnorm must be True",
    ),
    "spatial_pool_order_number": (
        lambda: SpatialAttention(3, pool_order=5),
        ValueError,
        r"^pool_order=5",
    ),
    "spatial_bn_momentum": (
        lambda: SpatialAttention(3, batchnorm=True, bn_momentum="0.1"),
        ValueError,
        r"^bn_momentum must be a number",
    ),
    "spatial_conv_name": (lambda: SpatialAttention(3, conv_name=""), ValueError, r"^conv_name"),
    "official_channels": (
        lambda: OfficialCBAM(HUGE),
        ValueError,
        r"^gate_channels must be <= 65536",
    ),
    "official_hidden": (
        lambda: OfficialCBAM(8, 16),
        ValueError,
        r"^gate_channels // reduction_ratio = 8 // 16 = 0",
    ),
    "official_ratio_float": (
        lambda: OfficialCBAM(8, 1e308),
        TypeError,
        r"^reduction_ratio must be an integer",
    ),
    "official_no_spatial_str": (
        lambda: OfficialCBAM(8, 2, no_spatial="False"),
        TypeError,
        r"^no_spatial must be True or False",
    ),
    "official_seed": (lambda: OfficialCBAM(8, 2, seed="x"), TypeError, r"^seed must be"),
    "conv_cbam_huge_r": (lambda: ConvCBAM(3, 4, r=1e308), ValueError, r"^r=1e\+308 gives"),
    "conv_cbam_huge_r_one_channel": (lambda: ConvCBAM(3, 1, r=1e308), ValueError, r"^r=1e\+308"),
    "conv_cbam_huge_channels": (lambda: ConvCBAM(HUGE, 4), ValueError, r"^in_channels must be"),
    "conv_cbam_seed": (lambda: ConvCBAM(3, 4, seed=[1.5]), TypeError, r"^seed must be"),
    "residual_huge": (lambda: ResidualBlockCBAM(4, HUGE), ValueError, r"^out_channels must be"),
    "residual_hidden": (
        lambda: ResidualBlockCBAM(4, 4, reduction=8),
        ValueError,
        r"^out_channels // reduction = 4 // 8 = 0",
    ),
    "residual_options_list": (
        lambda: ResidualBlockCBAM(4, 4, reduction=2, attention_options=[("mlp_bias", True)]),
        TypeError,
        r"^attention_options must be a dict",
    ),
    "residual_channel_mlp_bias_str": (
        lambda: ResidualBlockCBAM(
            4, 4, reduction=2, attention="channel", attention_options={"mlp_bias": "no"}
        ),
        TypeError,
        r"^mlp_bias must be True or False",
    ),
    "residual_spatial_descriptor": (
        lambda: ResidualBlockCBAM(
            4, 4, attention="spatial", attention_options={"spatial_descriptor": "avg"}
        ),
        ValueError,
        r"^spatial_descriptor='avg'",
    ),
    "residual_attention_list": (
        lambda: ResidualBlockCBAM(4, 4, attention=["cbam"]),
        ValueError,
        r"^attention=\['cbam'\]",
    ),
    "residual_seed": (lambda: ResidualBlockCBAM(4, 4, 1, 2, seed="0"), TypeError, r"^seed"),
    "fpn_huge": (lambda: ResnetFPN4CBAM(HUGE), ValueError, r"^num_channels must be <="),
    "fpn_hidden": (
        lambda: ResnetFPN4CBAM(4, reduction=8),
        ValueError,
        r"^num_channels // reduction = 4 // 8 = 0",
    ),
    "fpn_kernel": (lambda: ResnetFPN4CBAM(4, 2, kernel_size=4), ValueError, r"^kernel_size=4"),
    "classifier_widths_huge": (
        lambda: AttentionClassifier(3, 4, widths=(4, HUGE)),
        ValueError,
        r"^widths\[1\] must be <=",
    ),
    "classifier_widths_number": (
        lambda: AttentionClassifier(3, 4, widths=8),
        TypeError,
        r"^widths must be a sequence",
    ),
    "classifier_hidden": (
        lambda: AttentionClassifier(3, 4, widths=(8, 2), reduction=4),
        ValueError,
        r"^widths\[1\] // reduction = 2 // 4 = 0",
    ),
    "classifier_options": (
        lambda: AttentionClassifier(3, 4, attention_options={"mlp_bias": "no"}),
        TypeError,
        r"^mlp_bias must be True",
    ),
    "classifier_classes_huge": (
        lambda: AttentionClassifier(3, HUGE),
        ValueError,
        r"^num_classes must be <=",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_constructor_arguments_are_named(case):
    call, error, message = BAD_CALLS[case]
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("mode", ["False", 0, 1, None, "train", np.float64(1.0)])
@pytest.mark.parametrize("name", ["cbam_spatial_channel", "residual", "classifier"])
def test_train_needs_a_bool(name, mode):
    module, _, _ = stepped(name)
    module.eval()
    before = full_snapshot(module)
    with pytest.raises(TypeError, match=r"^mode must be True or False"):
        module.train(mode)
    assert_same(module, before)
    assert module.train(np.True_).training is True  # NumPy's bool is a bool


def test_good_seeds_are_accepted_and_reproducible():
    a = CBAM(8, 2, seed=np.uint8(3))
    b = CBAM(8, 2, seed=np.random.default_rng(3))
    c = CBAM(8, 2, seed=np.random.SeedSequence(3))
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[key], value)
        np.testing.assert_array_equal(c.state_dict()[key], value)


def test_public_names_still_importable():
    assert npcbam.CBAM is CBAM
