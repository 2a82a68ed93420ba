"""Finite-difference checks of the layers (float64): Conv2d, ConvTranspose2d, BatchNorm2d in
training and in evaluation mode, ReLU, Linear, and a Sequential of Conv2d, BatchNorm2d and
ReLU; plus BatchNorm's running statistics, computed here from their definition, and a check
that the gradient check itself leaves them as they were."""

import numpy as np
import pytest
from helpers import SAFE_MARGIN, assert_gradients_match, seeds
from hypothesis import assume, example, given
from hypothesis import strategies as st

import npcbam

MIN_VAR = 0.05  # batch variance floor: keeps 1/sqrt(var + eps) moderate for the differences


def conv_settings(draw, kernel):
    """A stride 1-3 and a padding 0 .. kernel // 2 + 1 per axis."""
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2 + 1)) for k in kernel)
    return stride, padding


@st.composite
def conv2d_layers(draw):
    """(layer, input shape): kernels 1-3 per axis, C_in, C_out in 1-2, an input the padded
    kernel fits, plus up to 2 rows and columns."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride, padding = conv_settings(draw, kernel)
    c_in, c_out, n = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h, w = (
        draw(st.integers(max(1, k - 2 * p), max(1, k - 2 * p) + 2)) for k, p in zip(kernel, padding)
    )
    bias = draw(st.booleans())
    layer = npcbam.Conv2d(c_in, c_out, kernel, stride, padding, bias=bias, seed=draw(seeds))
    return layer, (n, c_in, h, w)


@st.composite
def conv_transpose2d_layers(draw):
    """(layer, input shape): kernels 1-4, strides 1, 2, 4, output_padding < stride, padding
    0-1, an input long enough for a non-empty output."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([1, 2, 4])))
    padding = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
    output_padding = tuple(draw(st.integers(0, s - 1)) for s in stride)
    sizes = []
    for k, s, p, o in zip(kernel, stride, padding, output_padding):
        low = 1 + max(0, -(-(1 + 2 * p - k - o) // s))  # smallest L with a non-empty output
        sizes.append(draw(st.integers(low, low + 1)))
    c_in, c_out, n = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    layer = npcbam.ConvTranspose2d(
        c_in,
        c_out,
        kernel,
        stride,
        padding,
        output_padding,
        bias=draw(st.booleans()),
        seed=draw(seeds),
    )
    return layer, (n, c_in, *sizes)


@given(case=conv2d_layers(), seed=seeds)
@example(case=(npcbam.Conv2d(2, 3, 3, 1, 1, seed=0), (1, 2, 4, 5)), seed=0)
@example(
    case=(npcbam.Conv2d(1, 2, (1, 3), (2, 1), (0, 1), bias=False, seed=1), (2, 1, 3, 2)), seed=1
)
def test_conv2d_layer_gradients(case, seed):
    """Rows: input, weight and (with bias) bias."""
    layer, shape = case
    x = np.random.default_rng(seed).standard_normal(shape)
    report = npcbam.check_gradients(layer, x, seed=seed)
    assert [row.name for row in report.rows] == ["input", "weight"] + (
        ["bias"] if layer.has_bias else []
    )
    assert_gradients_match(report)


@given(case=conv_transpose2d_layers(), seed=seeds)
@example(case=(npcbam.ConvTranspose2d(2, 3, 3, 2, 1, 1, seed=0), (1, 2, 2, 3)), seed=0)
@example(case=(npcbam.ConvTranspose2d(1, 1, 5, 8, 1, 5, seed=1), (1, 1, 2, 1)), seed=1)
def test_conv_transpose2d_layer_gradients(case, seed):
    """Rows: input, weight (C_in, C_out, kh, kw) and (with bias) bias; includes the FPN's
    k3 s2 p1 op1 and k5 s8 p1 op5."""
    layer, shape = case
    x = np.random.default_rng(seed).standard_normal(shape)
    report = npcbam.check_gradients(layer, x, seed=seed)
    assert report["weight"].shape == (layer.in_channels, layer.out_channels, *layer.kernel_size)
    assert_gradients_match(report)


def batchnorm_with_random_state(rng, channels):
    """A BatchNorm2d whose gamma, beta and running statistics are random (running variance in
    [0.5, 2]), loaded through load_state_dict."""
    layer = npcbam.BatchNorm2d(channels)
    layer.load_state_dict(
        {
            "weight": rng.standard_normal(channels),
            "bias": rng.standard_normal(channels),
            "running_mean": rng.standard_normal(channels),
            "running_var": rng.uniform(0.5, 2.0, channels),
            "num_batches_tracked": np.array(7),
        }
    )
    return layer


bn_shapes = st.tuples(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)
).filter(lambda s: s[0] * s[2] * s[3] >= 2)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@given(shape=bn_shapes, seed=seeds)
@example(shape=(2, 1, 1, 1), seed=0)  # two values per channel, the fewest training allows
@example(shape=(1, 3, 2, 3), seed=1)
def test_batchnorm2d_layer_gradients(training, shape, seed):
    """Training mode differentiates through the batch statistics; evaluation mode uses the
    (random) running ones as constants. Rows: input, weight, bias (buffers get none)."""
    rng = np.random.default_rng(seed)
    layer = batchnorm_with_random_state(rng, shape[1]).train(training)
    x = rng.standard_normal(shape)
    assume(x.var(axis=(0, 2, 3)).min() >= MIN_VAR)
    report = npcbam.check_gradients(layer, x, seed=seed)
    assert [row.name for row in report.rows] == ["input", "weight", "bias"]
    assert_gradients_match(report)


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=seeds)
@example(shape=[1], seed=0)
def test_relu_layer_gradients(shape, seed):
    """Any shape; every input at least SAFE_MARGIN from the kink at 0, so none is skipped."""
    x = np.random.default_rng(seed).standard_normal(shape)
    assume(np.abs(x).min() >= SAFE_MARGIN)
    report = npcbam.check_gradients(npcbam.ReLU(), x, seed=seed)
    assert [row.name for row in report.rows] == ["input"]
    assert_gradients_match(report)


@given(
    n=st.integers(1, 3),
    d_in=st.integers(1, 5),
    d_out=st.integers(1, 5),
    bias=st.booleans(),
    seed=seeds,
)
@example(n=1, d_in=1, d_out=1, bias=True, seed=0)
def test_linear_layer_gradients(n, d_in, d_out, bias, seed):
    """2-D input (N, in). Rows: input, weight (out, in) and (with bias) bias."""
    rng = np.random.default_rng(seed)
    layer = npcbam.Linear(d_in, d_out, bias=bias, seed=rng)
    report = npcbam.check_gradients(layer, rng.standard_normal((n, d_in)), seed=seed)
    assert_gradients_match(report)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@given(
    c_in=st.integers(1, 2),
    c_out=st.integers(1, 3),
    hw=st.tuples(st.integers(2, 4), st.integers(2, 4)),
    seed=seeds,
)
@example(c_in=2, c_out=3, hw=(3, 4), seed=0)
def test_sequential_conv_bn_relu_gradients(training, c_in, c_out, hw, seed):
    """Conv2d(3x3, padding 1) -> BatchNorm2d -> ReLU, batch of 2, with the ReLU's inputs (the
    normalised map) kept SAFE_MARGIN from 0. Rows: input, then every parameter under the
    Sequential's keys 0.weight, 0.bias, 1.weight, 1.bias."""
    rng = np.random.default_rng(seed)
    model = npcbam.Sequential(
        npcbam.Conv2d(c_in, c_out, 3, padding=1, seed=rng),
        batchnorm_with_random_state(rng, c_out),
        npcbam.ReLU(),
    ).train(training)
    x = rng.standard_normal((2, c_in, *hw))
    conv_out = model[0].forward(x)
    assume(conv_out.var(axis=(0, 2, 3)).min() >= MIN_VAR)
    normalised = model[1].forward(conv_out)
    assume(np.abs(normalised).min() >= SAFE_MARGIN)
    report = npcbam.check_gradients(model, x, seed=seed)
    assert [row.name for row in report.rows] == [
        "input",
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
    ]
    assert_gradients_match(report)


# Running statistics, computed here from PyTorch's definition.


@pytest.mark.parametrize("momentum", [0.1, 0.5, 0.0, 1.0])
@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "loaded"])
def test_training_forward_updates_running_statistics(momentum, fresh):
    """After one training forward: running_mean = (1 - m) running_mean + m batch_mean,
    running_var = (1 - m) running_var + m * unbiased batch variance (divisor M - 1), and
    num_batches_tracked goes up by one; a second forward applies the rule again."""
    rng = np.random.default_rng(5)
    layer = npcbam.BatchNorm2d(3, momentum=momentum)
    if not fresh:
        layer = batchnorm_with_random_state(rng, 3)
        layer.momentum = momentum
    mean, var = layer.buffers()["running_mean"].copy(), layer.buffers()["running_var"].copy()
    count = int(layer.buffers()["num_batches_tracked"])
    for _ in range(2):
        x = rng.standard_normal((2, 3, 2, 3)) * 3 + 1
        layer.forward(x)
        m_values = x.shape[0] * x.shape[2] * x.shape[3]
        batch_mean = x.sum(axis=(0, 2, 3)) / m_values
        unbiased = ((x - batch_mean[:, None, None]) ** 2).sum(axis=(0, 2, 3)) / (m_values - 1)
        mean = (1 - momentum) * mean + momentum * batch_mean
        var = (1 - momentum) * var + momentum * unbiased
        count += 1
        buffers = layer.buffers()
        np.testing.assert_allclose(buffers["running_mean"], mean, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(buffers["running_var"], var, rtol=1e-14, atol=1e-15)
        assert buffers["num_batches_tracked"].dtype == np.int64
        assert int(buffers["num_batches_tracked"]) == count


def test_default_momentum_is_one_tenth():
    """PyTorch's default momentum 0.1 and eps 1e-5, from a fresh layer (mean 0, var 1)."""
    layer = npcbam.BatchNorm2d(2)
    assert (layer.momentum, layer.eps) == (0.1, 1e-5)
    x = np.random.default_rng(6).standard_normal((3, 2, 2, 2))
    layer.forward(x)
    np.testing.assert_allclose(layer.buffers()["running_mean"], 0.1 * x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(
        layer.buffers()["running_var"], 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1)
    )


def test_float32_forward_updates_float64_running_statistics():
    """The running statistics stay float64 when a float32 batch updates them."""
    layer = npcbam.BatchNorm2d(2)
    x = np.random.default_rng(8).standard_normal((2, 2, 3, 3))
    layer.forward(x.astype(np.float32))
    assert layer.buffers()["running_mean"].dtype == np.float64
    np.testing.assert_allclose(
        layer.buffers()["running_mean"], 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-6
    )


def test_eval_forward_leaves_running_statistics_alone():
    layer = batchnorm_with_random_state(np.random.default_rng(9), 2).eval()
    before = layer.state_dict()
    layer.forward(np.random.default_rng(10).standard_normal((2, 2, 2, 2)))
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradient_check_leaves_buffers_unchanged(training):
    """check_gradients runs many training forwards (each would move the running statistics
    and count a batch); afterwards every buffer, parameter and gradient is as it was, also
    inside a Sequential."""
    rng = np.random.default_rng(11)
    model = npcbam.Sequential(
        npcbam.Conv2d(2, 2, 3, padding=1, seed=rng), batchnorm_with_random_state(rng, 2)
    ).train(training)
    x = rng.standard_normal((2, 2, 3, 3))
    model.forward(x)
    model.backward(rng.standard_normal((2, 2, 3, 3)))
    state = model.state_dict()
    grads = {k: v.copy() for k, v in model.grads.items()}
    assert npcbam.check_gradients(model, x).passed
    after = model.state_dict()
    assert list(after) == list(state)
    for name, value in after.items():
        np.testing.assert_array_equal(value, state[name])
        assert value.dtype == state[name].dtype
    for name, grad in model.grads.items():
        np.testing.assert_array_equal(grad, grads[name])
