"""The module protocol on the layers: parameters and buffers, state_dict keys, order and
dtypes, loading (num_batches_tracked as int64, negative running_var refused), train/eval,
named_modules and get_submodule, retain_io, and a failed forward restoring the buffers of the
whole tree."""

import math

import numpy as np
import pytest

import npcbam


def small_stack(seed=0):
    """Conv2d -> BatchNorm2d -> ReLU -> (Conv2d -> BatchNorm2d), the last two nested."""
    rng = np.random.default_rng(seed)
    return npcbam.Sequential(
        npcbam.Conv2d(2, 3, 3, padding=1, seed=rng),
        npcbam.BatchNorm2d(3),
        npcbam.ReLU(),
        npcbam.Sequential(npcbam.Conv2d(3, 2, 1, bias=False, seed=rng), npcbam.BatchNorm2d(2)),
    )


# -- parameters, buffers, state_dict ------------------------------------------------------------


def test_batchnorm_parameters_and_buffers():
    """weight = 1, bias = 0 (parameters, with gradients); running_mean = 0, running_var = 1
    (float64) and num_batches_tracked = 0 (a 0-d int64) are buffers, with no gradient."""
    layer = npcbam.BatchNorm2d(3)
    assert list(layer.parameters()) == ["weight", "bias"]
    assert list(layer.grads) == ["weight", "bias"]
    np.testing.assert_array_equal(layer.parameters()["weight"], np.ones(3))
    np.testing.assert_array_equal(layer.parameters()["bias"], np.zeros(3))
    buffers = layer.buffers()
    assert list(buffers) == ["running_mean", "running_var", "num_batches_tracked"]
    np.testing.assert_array_equal(buffers["running_mean"], np.zeros(3))
    np.testing.assert_array_equal(buffers["running_var"], np.ones(3))
    assert buffers["running_mean"].dtype == buffers["running_var"].dtype == np.float64
    assert buffers["num_batches_tracked"].shape == ()
    assert buffers["num_batches_tracked"].dtype == np.int64
    assert int(buffers["num_batches_tracked"]) == 0


def test_state_dict_keys_order_and_dtypes():
    """PyTorch's order: each module's parameters, then its buffers, children after, prefixed
    by their index; copies, not the live arrays."""
    model = small_stack()
    state = model.state_dict()
    assert list(state) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "3.0.weight",
        "3.1.weight",
        "3.1.bias",
        "3.1.running_mean",
        "3.1.running_var",
        "3.1.num_batches_tracked",
    ]
    assert state["1.num_batches_tracked"].dtype == np.int64
    assert all(v.dtype == np.float64 for k, v in state.items() if "num_batches" not in k)
    assert list(model.buffers()) == [k for k in state if "running" in k or "num_batches" in k]
    assert set(model.grads) == set(model.parameters())
    state["1.running_mean"][...] = 5.0
    state["1.num_batches_tracked"][...] = 5
    assert not model.buffers()["1.running_mean"].any()
    assert int(model.buffers()["1.num_batches_tracked"]) == 0


def test_layer_state_dict_shapes():
    """Conv2d weight (out, in, kh, kw); ConvTranspose2d weight (in, out, kh, kw); Linear
    weight (out, in); bias (out,) each, absent with bias=False."""
    shapes = {k: v.shape for k, v in npcbam.Conv2d(2, 5, (3, 1), seed=0).state_dict().items()}
    assert shapes == {"weight": (5, 2, 3, 1), "bias": (5,)}
    shapes = {
        k: v.shape for k, v in npcbam.ConvTranspose2d(2, 5, (3, 1), seed=0).state_dict().items()
    }
    assert shapes == {"weight": (2, 5, 3, 1), "bias": (5,)}
    shapes = {k: v.shape for k, v in npcbam.Linear(4, 6, seed=0).state_dict().items()}
    assert shapes == {"weight": (6, 4), "bias": (6,)}
    assert list(npcbam.Linear(4, 6, bias=False).state_dict()) == ["weight"]
    assert list(npcbam.ConvTranspose2d(1, 1, bias=False).state_dict()) == ["weight"]
    assert npcbam.ReLU().state_dict() == {}


@pytest.mark.parametrize(
    ("layer", "fan_in"),
    [
        (npcbam.Conv2d(4, 6, 3, seed=0), 4 * 9),
        (npcbam.ConvTranspose2d(4, 6, 3, seed=0), 6 * 9),  # PyTorch: the weight's 2nd dim
        (npcbam.Linear(12, 5, seed=0), 12),
    ],
    ids=["conv2d", "conv_transpose2d", "linear"],
)
def test_default_initialisation_bound(layer, fan_in):
    """PyTorch's defaults: weight and bias within 1/sqrt(fan_in), fan_in being the product of
    the weight's dimensions after the first."""
    bound = 1 / math.sqrt(fan_in)
    for value in layer.state_dict().values():
        assert np.abs(value).max() <= bound


def test_load_state_dict_round_trip_and_int64_counter():
    """A loaded state dict is stored exactly: float32 parameters and buffers become float64,
    an int32 num_batches_tracked stays an int64 buffer."""
    source, target = small_stack(1), small_stack(2)
    rng = np.random.default_rng(3)
    source.forward(rng.standard_normal((2, 2, 3, 3)))  # moves running stats, counts a batch
    state = source.state_dict()
    state = {
        k: v.astype(np.int32) if v.dtype == np.int64 else v.astype(np.float32)
        for k, v in state.items()
    }
    target.load_state_dict(state)
    for name, value in target.state_dict().items():
        np.testing.assert_array_equal(value, state[name])
        expected = np.int64 if name.endswith("num_batches_tracked") else np.float64
        assert value.dtype == expected, name
    assert int(target.buffers()["1.num_batches_tracked"]) == 1


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("running_var", np.array([1.0, -0.5]), r"running_var: holds negative values"),
        ("running_var", np.array([1.0, np.nan]), r"running_var: holds non-finite values"),
        ("running_mean", np.array([np.inf, 0.0]), r"running_mean: holds non-finite values"),
        ("running_mean", np.array([1, 2]), r"running_mean: dtype int64, expected float32"),
        ("num_batches_tracked", np.array(3.0), r"num_batches_tracked: dtype float64, expected"),
        ("num_batches_tracked", np.array(True), r"num_batches_tracked: dtype bool, expected"),
        ("num_batches_tracked", np.array([3]), r"num_batches_tracked: shape \(1,\), expected"),
        ("running_mean", np.zeros(3), r"running_mean: shape \(3,\), expected \(2,\)"),
    ],
    ids=[
        "negative_var",
        "nan_var",
        "inf_mean",
        "int_mean",
        "float_counter",
        "bool_counter",
        "counter_shape",
        "mean_shape",
    ],
)
def test_load_state_dict_rejects_bad_buffers_and_changes_nothing(key, value, message):
    """Every bad buffer raises ValueError naming it; the other, valid, entries are not loaded
    either."""
    layer = npcbam.BatchNorm2d(2)
    layer.forward(np.random.default_rng(4).standard_normal((2, 2, 2, 2)))
    before = layer.state_dict()
    state = {k: v + 1 for k, v in before.items()}  # all valid and all different ...
    state[key] = value  # ... but one
    with pytest.raises(ValueError, match=message) as info:
        layer.load_state_dict(state)
    assert "nothing was changed" in str(info.value)
    for name, current in layer.state_dict().items():
        np.testing.assert_array_equal(current, before[name])


def test_load_state_dict_accepts_zero_running_var():
    """A variance of exactly 0 (a constant channel) is valid: only negative ones are not."""
    layer = npcbam.BatchNorm2d(2)
    state = layer.state_dict()
    state["running_var"] = np.zeros(2)
    layer.load_state_dict(state)
    assert not layer.buffers()["running_var"].any()


def test_buffers_are_live():
    """buffers() returns the live arrays (what the optimizer must skip, what check_gradients
    restores): a write through them changes the module."""
    layer = npcbam.BatchNorm2d(2)
    layer.buffers()["running_mean"][...] = 3.0
    np.testing.assert_array_equal(layer.state_dict()["running_mean"], [3.0, 3.0])


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (npcbam.Conv2d(2, 3, 3, padding=1, seed=0), (2, 2, 3, 4)),
        (npcbam.ConvTranspose2d(2, 3, 3, 2, 1, 1, seed=0), (2, 2, 3, 4)),
        (npcbam.BatchNorm2d(2), (2, 2, 3, 4)),
        (npcbam.BatchNorm2d(2).eval(), (2, 2, 3, 4)),
        (npcbam.ReLU(), (2, 2, 3, 4)),
        (npcbam.Linear(4, 3, seed=0), (2, 4)),
        (small_stack(), (2, 2, 3, 4)),
    ],
    ids=[
        "conv2d",
        "conv_transpose2d",
        "batchnorm_train",
        "batchnorm_eval",
        "relu",
        "linear",
        "stack",
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_compute_in_the_input_dtype(layer, shape, dtype):
    """float32 in, float32 out and dx; parameters, gradients and buffers stay float64 (the
    counter int64); float32 and float64 agree to float32 precision."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(layer.forward(x).shape)
    dx64 = layer.backward(dy)
    y = layer.forward(x.astype(dtype))
    dx = layer.backward(dy.astype(dtype))
    assert y.dtype == dtype and dx.dtype == dtype and dx.shape == x.shape
    for name, value in {**layer.state_dict(), **layer.grads}.items():
        expected = np.int64 if name.endswith("num_batches_tracked") else np.float64
        assert value.dtype == expected, name
    np.testing.assert_allclose(dx, dx64, rtol=1e-4, atol=1e-5)


# -- train / eval ------------------------------------------------------------------------------


def test_train_and_eval_reach_every_module():
    model = small_stack()
    assert all(m.training for _, m in model.named_modules())
    assert model.eval() is model
    assert not any(m.training for _, m in model.named_modules())
    assert model.train() is model
    assert all(m.training for _, m in model.named_modules())
    model[3].eval()
    assert [name for name, m in model.named_modules() if not m.training] == ["3", "3.0", "3.1"]


def test_eval_normalises_with_running_statistics():
    """Evaluation: y = gamma (x - running_mean) / sqrt(running_var + eps) + beta, whatever the
    batch; training: the batch's own statistics."""
    rng = np.random.default_rng(5)
    layer = npcbam.BatchNorm2d(2, eps=1e-3)
    state = {
        "weight": np.array([2.0, -1.0]),
        "bias": np.array([0.5, 0.0]),
        "running_mean": np.array([1.0, -2.0]),
        "running_var": np.array([4.0, 0.25]),
        "num_batches_tracked": np.array(10),
    }
    layer.load_state_dict(state)
    x = rng.standard_normal((3, 2, 2, 2))
    c = (slice(None), None, None)
    expected = (
        state["weight"][c]
        * (x - state["running_mean"][c])
        / np.sqrt(state["running_var"][c] + 1e-3)
        + state["bias"][c]
    )
    np.testing.assert_allclose(layer.eval()(x), expected, rtol=1e-14)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    expected = state["weight"][c] * (x - mean[c]) / np.sqrt(var[c] + 1e-3) + state["bias"][c]
    np.testing.assert_allclose(layer.train()(x), expected, rtol=1e-13, atol=1e-14)


def test_eval_accepts_one_value_per_channel():
    """Evaluation mode has no batch statistics, so a (1, C, 1, 1) input is fine."""
    layer = npcbam.BatchNorm2d(3).eval()
    assert layer(np.ones((1, 3, 1, 1))).shape == (1, 3, 1, 1)


# -- named_modules / get_submodule -------------------------------------------------------------


def test_named_modules_and_get_submodule():
    model = small_stack()
    names = [name for name, _ in model.named_modules()]
    assert names == ["", "0", "1", "2", "3", "3.0", "3.1"]
    assert model.get_submodule("") is model
    assert model.get_submodule("3.1") is model[3][1]
    assert isinstance(model.get_submodule("1"), npcbam.BatchNorm2d)
    with pytest.raises(KeyError, match=r"no submodule '3\.2' in Sequential; paths: \['0', '1'"):
        model.get_submodule("3.2")


def test_named_modules_of_a_residual_block():
    """A library block: its children's paths, parents first, and the projection shortcut's
    Sequential with its two layers."""
    block = npcbam.ResidualBlockCBAM(2, 4, stride=2, reduction=2, kernel_size=3, seed=0)
    names = [name for name, _ in block.named_modules()]
    for name in ["conv1", "bn1", "relu1", "conv2", "bn2", "cbam", "shortcut.0", "shortcut.1"]:
        assert name in names
    assert names.index("shortcut") < names.index("shortcut.0") < names.index("shortcut.1")
    assert block.get_submodule("shortcut.1") is block.shortcut[1]


# -- retain_io ---------------------------------------------------------------------------------


def test_retain_io_keeps_output_and_output_gradient():
    """A layer deep inside a Sequential keeps its own output and the gradient arriving at it
    (what Grad-CAM reads); switching off forgets them."""
    rng = np.random.default_rng(6)
    model = small_stack()
    target = model.get_submodule("2")  # the ReLU
    with pytest.raises(RuntimeError, match=r"ReLU is not retaining: call retain_io\(\) first"):
        target.retained
    target.retain_io()
    assert target.retained == {}
    x = rng.standard_normal((2, 2, 3, 3))
    y = model(x)
    relu_out = target.retained["output"]
    expected = np.maximum(model[1](model[0](x)), 0.0)  # the same batch: same statistics
    np.testing.assert_allclose(relu_out, expected, rtol=1e-14)
    model(x)  # the direct calls above replaced the children's caches: forward again
    dy = rng.standard_normal(y.shape).astype(np.float32)  # cast to the output's dtype
    model.backward(dy)
    grad = target.retained["output_grad"]
    assert grad.dtype == np.float64 and grad.shape == relu_out.shape
    model[3].zero_grad()
    np.testing.assert_allclose(grad, model[3].backward(dy), rtol=1e-14)
    target.retain_io(False)
    with pytest.raises(RuntimeError, match="not retaining"):
        target.retained


# -- a failed forward --------------------------------------------------------------------------


def test_failed_forward_restores_buffers_of_the_whole_tree():
    """BatchNorm 1 updates its running statistics, then BatchNorm 2 rejects its input (one
    value per channel after the 3x3 convolution): every buffer is restored, and the container
    and its children refuse backward until the next successful forward."""
    rng = np.random.default_rng(7)
    model = npcbam.Sequential(
        npcbam.BatchNorm2d(2),
        npcbam.Conv2d(2, 2, 3, seed=rng),
        npcbam.Sequential(npcbam.BatchNorm2d(2)),
    )
    good = rng.standard_normal((2, 2, 4, 4))
    model.forward(good)
    model.backward(rng.standard_normal((2, 2, 2, 2)))
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"more than one value per channel.*\(1, 2, 1, 1\)"):
        model.forward(rng.standard_normal((1, 2, 3, 3)))
    after = model.state_dict()
    for name, value in after.items():
        np.testing.assert_array_equal(value, before[name])
        assert value.dtype == before[name].dtype
    for path in ["", "0", "1", "2", "2.0"]:
        with pytest.raises(RuntimeError, match=r"the last forward\(\) through it failed"):
            model.get_submodule(path).backward(np.zeros((2, 2, 2, 2)))
    model.forward(good)  # recovers
    assert model.backward(np.ones((2, 2, 2, 2))).shape == good.shape
    assert int(model.buffers()["0.num_batches_tracked"]) == 2


def test_failed_forward_inside_a_residual_block_restores_its_buffers():
    """A NaN-free but wrongly shaped input fails the block's own check before anything runs;
    a NaN fails inside conv1 (before bn1 moves): either way the block's buffers are as they
    were."""
    rng = np.random.default_rng(8)
    block = npcbam.ResidualBlockCBAM(2, 2, reduction=1, kernel_size=3, seed=rng)
    block.forward(rng.standard_normal((2, 2, 3, 3)))
    before = block.state_dict()
    bad = rng.standard_normal((2, 2, 3, 3))
    bad[1, 0, 2, 1] = np.nan
    for x, message in [(bad, r"non-finite"), (np.zeros((2, 3, 3, 3)), r"3 channels")]:
        with pytest.raises(ValueError, match=message):
            block.forward(x)
        for name, value in block.state_dict().items():
            np.testing.assert_array_equal(value, before[name])
