"""Bad input to the layers: each case raises a clear error naming the bad value and what was
expected, and leaves the layer exactly as it was (parameters, buffers, gradients, and the last
forward, which backward still differentiates)."""

import numpy as np
import pytest

import npcbam


def make_layer(kind):
    """A layer of each kind, and the shape of a valid input for it."""
    if kind == "conv2d":
        return npcbam.Conv2d(3, 2, 3, padding=1, seed=0), (2, 3, 4, 5)
    if kind == "conv_transpose2d":
        return npcbam.ConvTranspose2d(3, 2, 3, 2, 1, 1, seed=0), (2, 3, 4, 5)
    if kind == "batchnorm2d":
        return npcbam.BatchNorm2d(3), (2, 3, 4, 5)
    if kind == "relu":
        return npcbam.ReLU(), (2, 3, 4, 5)
    if kind == "linear":
        return npcbam.Linear(3, 2, seed=0), (4, 3)
    if kind == "sequential":
        layers = (npcbam.Conv2d(3, 2, 1, seed=0), npcbam.BatchNorm2d(2), npcbam.ReLU())
        return npcbam.Sequential(*layers), (2, 3, 4, 5)
    raise AssertionError(kind)


KINDS = ["conv2d", "conv_transpose2d", "batchnorm2d", "relu", "linear", "sequential"]
FEATURE_MAP_KINDS = [k for k in KINDS if k not in ("relu", "linear")]


def after_step(kind, training=True):
    """A layer after one forward and backward, the input, the upstream gradient, the input
    gradient, and a snapshot of the state."""
    layer, shape = make_layer(kind)
    layer.train(training)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    return layer, x, dy, dx, snapshot(layer)


@pytest.fixture(params=KINDS)
def layer_after_step(request):
    return after_step(request.param)


def snapshot(layer):
    return {
        "state": layer.state_dict(),
        "buffers": {k: v.copy() for k, v in layer.buffers().items()},
        "grads": {k: v.copy() for k, v in layer.grads.items()},
        "training": [m.training for _, m in layer.named_modules()],
    }


def assert_unchanged(layer, before, dy=None, dx=None, failed_inside=False):
    """Same state, buffers, gradients and modes. With ``dy``: the layer still differentiates
    its last good forward (backward gives ``dx`` again; the gradients are then put back),
    unless the input was rejected *inside* a container's forward (``failed_inside``): its
    children may have cached the rejected input, so it refuses backward until the next
    successful forward, as Module.forward documents."""
    after = snapshot(layer)
    assert list(after["state"]) == list(before["state"])
    for table in ("state", "buffers", "grads"):
        for name, value in after[table].items():
            np.testing.assert_array_equal(value, before[table][name], err_msg=f"{table} {name}")
            assert value.dtype == before[table][name].dtype
    assert after["training"] == before["training"]
    if dy is None:
        return
    if failed_inside and layer._children:
        with pytest.raises(RuntimeError, match=r"the last forward\(\) through it failed"):
            layer.backward(dy)
        return
    np.testing.assert_array_equal(layer.backward(dy), dx)
    for name, grad in layer.grads.items():
        grad[...] = before["grads"][name]


def test_wrong_dtype(layer_after_step):
    """Integer, bool and float16 inputs raise TypeError naming the dtype."""
    layer, x, dy, dx, before = layer_after_step
    for dtype in (np.int64, np.int32, bool, np.float16):
        with pytest.raises(TypeError, match=rf"x has dtype {np.dtype(dtype)}; expected float32"):
            layer.forward(x.astype(dtype))
    assert_unchanged(layer, before, dy, dx)


BAD_VALUES = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}


def non_finite_cases(tensor, values=BAD_VALUES):
    """(kind, training, value) for every layer, both modes, and each value.

    Every case must raise the ValueError *before* any arithmetic meets the bad value: an
    inf - inf inside a product would warn first (an error under this suite's settings), and a
    ReLU would pass a NaN in dy straight through where x > 0."""
    params = []
    for kind in KINDS:
        for mode in ("train", "eval"):
            for name, value in values.items():
                case_id = f"{kind}-{mode}-{name}"
                params.append(pytest.param(kind, mode == "train", value, id=case_id))
    return params


def first_index_pattern(index):
    return rf"\(first at index \({', '.join(map(str, index))}\): "


@pytest.mark.parametrize(("kind", "training", "bad_value"), non_finite_cases("x"))
def test_non_finite_input(kind, training, bad_value):
    """A NaN or infinity raises ValueError counting it and giving its index and value,
    before BatchNorm's running statistics move."""
    layer, x, dy, dx, before = after_step(kind, training)
    bad = x.copy()
    index = (1, 2) + (0,) * (x.ndim - 2)
    bad[index] = bad_value
    expected = r"x holds 1 non-finite value\(s\) " + first_index_pattern(index)
    with pytest.raises(ValueError, match=expected + f"{bad_value}\\)"):
        layer.forward(bad)
    assert_unchanged(layer, before, dy, dx, failed_inside=True)


@pytest.mark.parametrize(
    ("kind", "training", "bad_value"), non_finite_cases("mixed", {"inf": np.inf})
)
def test_infinities_of_both_signs(kind, training, bad_value):
    """+inf and -inf side by side (one receptive field, one channel): still the ValueError,
    counting both, and no RuntimeWarning on the way."""
    layer, x, dy, dx, before = after_step(kind, training)
    bad = x.copy()
    first, second = (0,) * x.ndim, (0,) * (x.ndim - 1) + (1,)
    bad[first], bad[second] = bad_value, -bad_value
    expected = r"x holds 2 non-finite value\(s\) " + first_index_pattern(first) + "inf"
    with pytest.raises(ValueError, match=expected):
        layer.forward(bad)
    assert_unchanged(layer, before, dy, dx, failed_inside=True)


@pytest.mark.parametrize(("kind", "training", "bad_value"), non_finite_cases("dy"))
def test_non_finite_upstream_gradient(kind, training, bad_value):
    """README: NaN or inf in dy raises ValueError; the gradients are not touched and the
    cached forward is kept."""
    layer, _, dy, dx, before = after_step(kind, training)
    bad = dy.copy()
    bad[(0, 1) + (0,) * (dy.ndim - 2)] = bad_value
    with pytest.raises(ValueError, match=r"dy holds 1 non-finite value\(s\)"):
        layer.backward(bad)
    assert_unchanged(layer, before, dy, dx)


def test_wrong_upstream_gradient_shape(layer_after_step):
    layer, _, dy, dx, before = layer_after_step
    bad = np.zeros((*dy.shape, 1))
    shape = str(dy.shape).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(
        ValueError, match=rf"dy has shape .*; expected the last output's shape {shape}"
    ):
        layer.backward(bad)
    assert_unchanged(layer, before, dy, dx)


@pytest.mark.parametrize("kind", FEATURE_MAP_KINDS)
@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((3, 4, 5), r"x has shape \(3, 4, 5\) \(3-D\); expected 4-D \(N, C, H, W\)"),
        ((1, 2, 3, 4, 5), r"\(5-D\); expected 4-D"),
        ((2, 4, 4, 5), r"x has 4 channels \(shape \(2, 4, 4, 5\)\); this module was built for 3"),
        ((2, 3, 0, 5), r"x has shape \(2, 3, 0, 5\); every dimension must be at least 1"),
    ],
    ids=["3-D", "5-D", "channels", "empty"],
)
def test_feature_map_layers_reject_bad_shapes(kind, shape, message):
    layer, good_shape = make_layer(kind)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(good_shape)
    dy = rng.standard_normal(layer.forward(x).shape)
    dx = layer.backward(dy)
    before = snapshot(layer)
    with pytest.raises(ValueError, match=message):
        layer.forward(np.zeros(shape))
    assert_unchanged(layer, before, dy, dx)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((4, 3, 1, 1), r"x has shape \(4, 3, 1, 1\) \(4-D\); expected 2-D \(N, in_features\)"),
        ((3,), r"x has shape \(3,\) \(1-D\); expected 2-D"),
        ((4, 5), r"x has 5 features \(shape \(4, 5\)\); this layer was built for 3"),
    ],
    ids=["4-D", "1-D", "features"],
)
def test_linear_rejects_bad_shapes(shape, message):
    """Linear takes (N, in_features) only: a 4-D feature map must be flattened first."""
    layer, good_shape = make_layer("linear")
    layer.forward(np.ones(good_shape))
    before = snapshot(layer)
    with pytest.raises(ValueError, match=message):
        layer.forward(np.zeros(shape))
    assert_unchanged(layer, before)


def test_batchnorm_training_needs_two_values_per_channel():
    """One value per channel (N*H*W = 1) has no variance: ValueError naming the shape and the
    count, in a bare BatchNorm2d and in one inside a Sequential; eval() is the way out."""
    layer = npcbam.BatchNorm2d(3)
    layer.forward(np.random.default_rng(2).standard_normal((2, 3, 2, 2)))
    before = snapshot(layer)
    shape = (1, 3, 1, 1)
    message = r"more than one value per channel, got x of shape \(1, 3, 1, 1\) \(N\*H\*W = 1\)"
    with pytest.raises(ValueError, match=message):
        layer.forward(np.ones(shape))
    assert_unchanged(layer, before)
    model = npcbam.Sequential(npcbam.Conv2d(3, 3, 1, seed=0), layer)
    with pytest.raises(ValueError, match=message):
        model.forward(np.ones(shape))
    assert_unchanged(layer, before)
    assert layer.eval().forward(np.ones(shape)).shape == shape


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"momentum": -0.1}, ValueError, r"momentum must be a number in \[0, 1\], got -0.1"),
        ({"momentum": 1.5}, ValueError, r"momentum must be a number in \[0, 1\], got 1.5"),
        ({"momentum": float("nan")}, ValueError, r"momentum must be .* got nan"),
        ({"momentum": None}, ValueError, r"momentum must be .* got None"),
        ({"momentum": "0.1"}, ValueError, r"momentum must be .* got '0.1'"),
        ({"eps": 0.0}, ValueError, r"eps must be a positive finite number, got 0.0"),
        ({"eps": -1e-5}, ValueError, r"eps must be a positive finite number, got -1e-05"),
        ({"eps": float("nan")}, ValueError, r"eps must be a positive finite number, got nan"),
        ({"num_features": 0}, ValueError, r"num_features must be >= 1, got 0"),
        ({"num_features": 2.0}, TypeError, r"num_features must be an integer, got 2.0"),
    ],
)
def test_batchnorm_bad_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        npcbam.BatchNorm2d(**{"num_features": 3, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stride": 2, "output_padding": 2}, r"output_padding=\(2, 2\) must be smaller than "),
        ({"stride": 1, "output_padding": 1}, r"output_padding=\(1, 1\) .* stride=\(1, 1\)"),
        (
            {"stride": (2, 4), "output_padding": (1, 4)},
            r"output_padding=\(1, 4\) .* stride=\(2, 4\)",
        ),
    ],
)
def test_conv_transpose_output_padding_must_be_below_stride(kwargs, message):
    with pytest.raises(ValueError, match=message):
        npcbam.ConvTranspose2d(2, 2, 3, **kwargs)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: npcbam.Conv2d(0, 2), ValueError, r"in_channels must be >= 1, got 0"),
        (lambda: npcbam.Conv2d(2, 2, 0), ValueError, r"kernel_size must be >= 1, got 0"),
        (lambda: npcbam.Conv2d(2, 2, 3, stride=0), ValueError, r"stride must be >= 1, got 0"),
        (lambda: npcbam.Conv2d(2, 2, 3, padding=-1), ValueError, r"padding must be >= 0, got -1"),
        (lambda: npcbam.Conv2d(2, 2, (3, 3, 3)), ValueError, r"kernel_size must be an int or a"),
        (lambda: npcbam.ConvTranspose2d(2, 0), ValueError, r"out_channels must be >= 1, got 0"),
        (lambda: npcbam.Linear(3, 2.5), TypeError, r"out_features must be an integer, got 2.5"),
    ],
    ids=["in_channels", "kernel", "stride", "padding", "kernel_triple", "out_channels", "float"],
)
def test_bad_layer_construction(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_conv_transpose_empty_output_raises():
    """A padding that crops everything away raises ValueError with the size formula."""
    layer = npcbam.ConvTranspose2d(1, 1, 1, padding=2, seed=0)
    with pytest.raises(ValueError, match=r"\(3-1\)\*1 - 2\*2 \+ 1 \+ 0 = -1 < 1"):
        layer.forward(np.ones((1, 1, 3, 3)))


def test_kernel_larger_than_padded_input_raises():
    layer = npcbam.Conv2d(1, 1, 5, seed=0)
    with pytest.raises(ValueError, match=r"kernel of size 5 does not fit an input of size 3"):
        layer.forward(np.ones((1, 1, 3, 8)))


def test_sequential_needs_modules():
    with pytest.raises(ValueError, match=r"Sequential needs at least one module"):
        npcbam.Sequential()
    with pytest.raises(TypeError, match=r"Sequential item 1 is a function; expected an npcbam"):
        npcbam.Sequential(npcbam.ReLU(), lambda x: x)
    with pytest.raises(TypeError, match=r"Sequential item 0 is a ndarray"):
        npcbam.Sequential(np.ones(3))


def test_backward_before_forward():
    for kind in KINDS:
        layer, shape = make_layer(kind)
        with pytest.raises(RuntimeError, match=r"backward\(\) called before any forward\(\)"):
            layer.backward(np.zeros(shape))
