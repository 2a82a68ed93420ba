"""Large, tiny and non-finite inputs: every public op and layer gives a finite result or one
clear ValueError, never a NaN, an inf or a RuntimeWarning (this suite turns warnings into
errors). Policy: L2 pooling, log-sum-exp, the channel mean and softmax are computed so that a
finite input gives a finite result whenever the exact result is representable; any other
result that would leave the dtype's range is refused, naming the op and the magnitudes."""

import numpy as np
import pytest

import npcbam
from npcbam import ops
from npcbam.ops.conv_transpose import conv_transpose2d_backward, conv_transpose2d_forward
from npcbam.ops.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from npcbam.ops.norm import batch_statistics, batchnorm2d_backward, batchnorm2d_forward
from npcbam.ops.smooth_pooling import (
    global_lp_pool_backward,
    global_lp_pool_forward,
    global_lse_pool_backward,
    global_lse_pool_forward,
)

DTYPES = [np.float32, np.float64]
SHAPE = (2, 4, 5, 3)


def extreme_input(kind, dtype, seed=0):
    """A (2, 4, 5, 3) array of ``dtype``: normal draws with some entries made extreme."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(SHAPE).astype(dtype)
    big = np.finfo(dtype).max
    if kind == "max":
        x.flat[::2] = big
    elif kind == "-max":
        x.flat[::3] = -big
    elif kind == "max/2 mixed":
        x.flat[::2] = big / 2
        x.flat[1::4] = -big / 2
    elif kind == "sqrt(max)":  # squares overflow, values do not
        x = (x * np.sqrt(big)).astype(dtype)
    elif kind == "tiny":
        x = (x * np.finfo(dtype).tiny).astype(dtype)
    elif kind == "+inf -inf":
        x.flat[0], x.flat[-1] = np.inf, -np.inf
    elif kind == "nan":
        x.flat[7] = np.nan
    return x


KINDS = ["max", "-max", "max/2 mixed", "sqrt(max)", "tiny", "+inf -inf", "nan"]


def _pair(forward, backward):
    def run(x, dy_scale):
        out, cache = forward(x)
        dout = np.full(np.shape(out), dy_scale, dtype=x.dtype)
        grads = backward(dout, cache)
        return (out, *(grads if isinstance(grads, tuple) else (grads,)))

    return run


def _weight(shape, dtype):
    return np.random.default_rng(1).standard_normal(shape).astype(dtype)


def _ops(dtype):
    """Every public op pair, as a function of (x (2, 4, 5, 3), dout scale) -> arrays."""
    w = _weight((3, 4, 3, 3), dtype)
    wt = _weight((4, 3, 3, 3), dtype)
    bias = _weight((3,), dtype)
    gamma, beta = np.ones(4, dtype), np.zeros(4, dtype)

    def batchnorm_train(x):
        return batchnorm2d_forward(x, gamma, beta, *batch_statistics(x), 1e-5, True)

    def batchnorm_eval(x):
        return batchnorm2d_forward(
            x, gamma, beta, np.zeros(4, dtype), np.ones(4, dtype), 1e-5, False
        )

    def xent(x, dy_scale):
        loss, cache = softmax_cross_entropy_forward(x.reshape(2, 60), np.array([0, 59]))
        return np.array(loss), softmax_cross_entropy_backward(dy_scale, cache)

    return {
        "sigmoid": _pair(ops.sigmoid_forward, ops.sigmoid_backward),
        "relu": _pair(ops.relu_forward, ops.relu_backward),
        "global_avg": _pair(ops.global_avg_pool_forward, ops.global_avg_pool_backward),
        "global_max": _pair(ops.global_max_pool_forward, ops.global_max_pool_backward),
        "channel_avg": _pair(ops.channel_avg_pool_forward, ops.channel_avg_pool_backward),
        "channel_max": _pair(ops.channel_max_pool_forward, ops.channel_max_pool_backward),
        "lp": _pair(global_lp_pool_forward, global_lp_pool_backward),
        "lse": _pair(global_lse_pool_forward, global_lse_pool_backward),
        "conv2d": _pair(lambda x: ops.conv2d_forward(x, w, bias, 1, 1), ops.conv2d_backward),
        "conv_transpose2d": _pair(
            lambda x: conv_transpose2d_forward(x, wt, bias, 2, 1, 1), conv_transpose2d_backward
        ),
        "linear": _pair(
            lambda x: ops.linear_forward(x.reshape(2, 60), _weight((3, 60), dtype), bias),
            ops.linear_backward,
        ),
        "shared_mlp": _pair(
            lambda x: ops.shared_mlp_forward(
                x.reshape(2, 60), _weight((3, 60), dtype), _weight((60, 3), dtype)
            ),
            ops.shared_mlp_backward,
        ),
        "batchnorm_train": _pair(batchnorm_train, batchnorm2d_backward),
        "batchnorm_eval": _pair(batchnorm_eval, batchnorm2d_backward),
        "gate_channel": _pair(
            lambda x: ops.gate_forward(x, np.full((2, 4, 1, 1), 0.5, dtype)), ops.gate_backward
        ),
        "gate_large": _pair(
            lambda x: ops.gate_forward(x, np.full((2, 1, 5, 3), 3.0, dtype)), ops.gate_backward
        ),
        "softmax_cross_entropy": xent,
    }


def _modules():
    return {
        "CBAM": lambda: npcbam.CBAM(4, reduction=2, kernel_size=3, seed=0),
        "CBAM-lp-lse": lambda: npcbam.CBAM(
            4, reduction=2, kernel_size=3, seed=0, pool_types=("avg", "max", "lp", "lse")
        ),
        "ChannelAttention-lp": lambda: npcbam.ChannelAttention(
            4, 2, seed=0, pool_types=("avg", "lp")
        ),
        "ChannelAttention-lse": lambda: npcbam.ChannelAttention(
            4, 2, seed=0, pool_types=("lse", "max")
        ),
        "SpatialAttention": lambda: npcbam.SpatialAttention(3, seed=0),
        "Conv2d": lambda: npcbam.Conv2d(4, 3, 3, padding=1, seed=0),
        "ConvTranspose2d": lambda: npcbam.ConvTranspose2d(4, 3, 3, stride=2, seed=0),
        "BatchNorm2d": lambda: npcbam.BatchNorm2d(4),
        "BatchNorm2d-eval": lambda: npcbam.BatchNorm2d(4).eval(),
        "ReLU": lambda: npcbam.ReLU(),
    }


def _finite_or_clear_error(run):
    """Run; it must return finite arrays or raise ValueError with a clear message (warnings
    are errors in this suite, so a RuntimeWarning fails here)."""
    try:
        results = run()
    except ValueError as error:
        message = str(error)
        assert "non-finite value(s)" in message or "overflows" in message, message
        return "refused"
    for result in results:
        if result is not None:  # an absent bias has no gradient
            assert np.isfinite(result).all(), "a finite input gave a non-finite result silently"
    return "finite"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", list(_ops(np.float64)))
def test_every_op_is_finite_or_refuses(op, kind, dtype):
    x = extreme_input(kind, dtype)
    for dy_scale in (0.3, float(np.finfo(dtype).max) / 4):
        outcome = _finite_or_clear_error(lambda scale=dy_scale: _ops(dtype)[op](x, scale))
        if kind == "nan":  # +-inf may be harmless (sigmoid gives 1 and 0); a NaN never is
            assert outcome == "refused"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(_modules()))
def test_every_layer_is_finite_or_refuses(name, kind, dtype):
    x = extreme_input(kind, dtype)
    module = _modules()[name]()

    def step():
        y = module.forward(x)
        dx = module.backward(np.full(y.shape, 0.3, dtype=dtype))
        return (y, dx, *module.grads.values())

    outcome = _finite_or_clear_error(step)
    if kind in ("+inf -inf", "nan"):
        assert outcome == "refused"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["max", "-max", "max/2 mixed", "sqrt(max)"])
@pytest.mark.parametrize("name", list(_modules()))
def test_a_finite_dy_is_never_blamed(name, kind, dtype):
    """Before, inputs near the maximum gave a NaN output silently, and the next backward
    reported the user's finite dy as holding non-finite values."""
    module = _modules()[name]()
    try:
        y = module.forward(extreme_input(kind, dtype))
    except ValueError as error:
        assert "overflows" in str(error)
        return
    assert np.isfinite(y).all()
    try:
        module.backward(np.full(y.shape, 0.3, dtype=dtype))
    except ValueError as error:
        assert "dy holds" not in str(error) and "overflows" in str(error), str(error)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_l2_pooling_of_large_values_is_finite_and_accurate(dtype):
    """float32 inputs near 1e19 overflowed the sum of squares: mlp.0.weight's gradient was
    non-finite while the output looked fine. Now every gradient matches float64."""
    scale = np.sqrt(np.finfo(dtype).max) / 2  # ~9e18 in float32: x^2 * H*W overflows
    x = (np.random.default_rng(0).standard_normal((2, 4, 5, 3)) * scale).astype(dtype)
    module, reference = (
        npcbam.ChannelAttention(4, 2, seed=0, pool_types=("lp",)) for _ in range(2)
    )
    for layer in (module, reference):  # logits of order 1, so that the sigmoid is not flat
        layer.parameters()["mlp.0.weight"][:] /= scale
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    y, dx = module.forward(x), module.backward(dy)
    y64 = reference.forward(x.astype(np.float64))  # float64's range holds these squares
    dx64 = reference.backward(dy.astype(np.float64))
    assert 0.01 < reference.channel_map.min() and reference.channel_map.max() < 0.99
    np.testing.assert_allclose(y, y64, rtol=1e-4)
    np.testing.assert_allclose(dx, dx64, rtol=1e-3, atol=1e-5 * np.abs(dx64).max())
    for name, grad in module.grads.items():
        assert np.isfinite(grad).all(), name
        np.testing.assert_allclose(grad, reference.grads[name], rtol=1e-3)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("scale_name", ["huge", "tiny"])
def test_l2_pooling_op_matches_the_scaled_norm(dtype, scale_name):
    """Plain sums of squares overflow (huge) or underflow to 0 (tiny): the op rescales."""
    finfo = np.finfo(dtype)
    scale = np.sqrt(finfo.max) if scale_name == "huge" else np.sqrt(finfo.tiny) / 8
    unit = np.random.default_rng(2).standard_normal((2, 3, 4, 5))
    x = (unit * scale).astype(dtype)
    out, cache = global_lp_pool_forward(x)
    expected = np.sqrt((unit**2).sum(axis=(2, 3))) * scale
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    dout = np.random.default_rng(3).standard_normal(out.shape).astype(dtype)
    dx = global_lp_pool_backward(dout, cache)
    expected_dx = unit / np.sqrt((unit**2).sum(axis=(2, 3), keepdims=True)) * dout[..., None, None]
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-4, atol=1e-6)


def test_l2_pooling_of_an_all_zero_channel_is_zero():
    x = np.zeros((1, 2, 3, 3))
    x[0, 1, 0, 0] = 2.0
    out, cache = global_lp_pool_forward(x)
    np.testing.assert_array_equal(out, [[0.0, 2.0]])
    dx = global_lp_pool_backward(np.ones((1, 2)), cache)
    assert dx[0, 0].sum() == 0 and dx[0, 1, 0, 0] == 1.0


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_channel_mean_of_large_values_is_finite(dtype):
    """The sum over channels overflowed (a warning, then inf): the mean is representable."""
    big = np.finfo(dtype).max
    x = np.full((1, 4, 2, 2), big * 0.9, dtype=dtype)
    x[0, 1] = big * 0.5
    out, _ = ops.channel_avg_pool_forward(x)
    np.testing.assert_allclose(out, np.full((1, 1, 2, 2), big * 0.8), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_overflowing_layer_names_the_op_and_magnitude_and_changes_nothing(dtype):
    """A finite input whose convolution leaves the dtype's range: one clear error (not a NaN
    output that the next backward would blame on dy), and the layer is unchanged."""
    layer = npcbam.Conv2d(4, 3, 3, padding=1, seed=0)
    layer.parameters()["weight"][:] = 0.5  # 36 products of max/2 * 0.5 add up beyond max
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    x = np.full((1, 4, 3, 3), np.finfo(dtype).max / 2, dtype=dtype)
    with pytest.raises(
        ValueError, match=rf"conv2d_forward: the result overflows {np.dtype(dtype)}"
    ):
        layer.forward(x)
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
        assert not layer.grads[name].any()


def test_cbam_near_the_float32_maximum_refuses_with_the_magnitude():
    module = npcbam.CBAM(4, reduction=2, kernel_size=3, seed=0)
    module.parameters()["mlp.0.weight"][:] = 1.0  # 4 * max/2 > max
    x = np.full((1, 4, 3, 3), np.finfo(np.float32).max / 2, dtype=np.float32)
    with pytest.raises(ValueError, match=r"overflows float32 .*\|x\| up to 1\.7e\+38"):
        module.forward(x)
