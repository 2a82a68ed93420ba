"""The public ops check their inputs as the layers do: float32 or float64, the number of
dimensions, agreeing shapes and, where it matters, finite values, with an error that names the
argument and what was expected."""

import numpy as np
import pytest

from npcbam import ops
from npcbam.ops.conv_transpose import conv_transpose2d_forward
from npcbam.ops.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from npcbam.ops.norm import batch_statistics, batchnorm2d_backward, batchnorm2d_forward
from npcbam.ops.smooth_pooling import global_lp_pool_forward, global_lse_pool_forward

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 4, 5))
W = RNG.standard_normal((2, 3, 3, 3))

FEATURE_MAP_FORWARDS = [
    ops.global_avg_pool_forward,
    ops.global_max_pool_forward,
    ops.channel_avg_pool_forward,
    ops.channel_max_pool_forward,
    global_lp_pool_forward,
    global_lse_pool_forward,
    batch_statistics,
    lambda x: ops.conv2d_forward(x, W),
    lambda x: conv_transpose2d_forward(x, W.transpose(1, 0, 2, 3)),
]
IDS = ["global_avg", "global_max", "channel_avg", "channel_max", "lp", "lse", "batch_stats"]
IDS += ["conv2d", "conv_transpose2d"]


@pytest.mark.parametrize("forward", FEATURE_MAP_FORWARDS, ids=IDS)
def test_three_dimensional_input_is_refused_by_name(forward):
    """Before: "not enough values to unpack (expected 4, got 3)"."""
    with pytest.raises(ValueError, match=r"x has shape \(3, 4, 5\) \(3-D\); expected 4-D \(N, C"):
        forward(X[0])


@pytest.mark.parametrize("forward", FEATURE_MAP_FORWARDS, ids=IDS)
@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.float16])
def test_non_float_input_is_refused_by_name(forward, dtype):
    with pytest.raises(TypeError, match=rf"x has dtype {np.dtype(dtype)}; expected float32"):
        forward(X.astype(dtype))


@pytest.mark.parametrize("forward", FEATURE_MAP_FORWARDS, ids=IDS)
def test_empty_input_is_refused(forward):
    with pytest.raises(ValueError, match=r"x has shape \(0, 3, 4, 5\); every dimension"):
        forward(np.zeros((0, 3, 4, 5)))


@pytest.mark.parametrize("forward", FEATURE_MAP_FORWARDS, ids=IDS)
def test_nan_input_is_refused_with_its_index(forward):
    bad = X.copy()
    bad[1, 2, 3, 4] = np.nan
    with pytest.raises(ValueError, match=r"x holds 1 non-finite value\(s\) \(first at index "):
        forward(bad)


def test_integer_arrays_are_refused_by_conv2d_and_sigmoid():
    """Before: both computed on integer arrays."""
    with pytest.raises(TypeError, match=r"x has dtype int64; expected float32 or float64"):
        ops.conv2d_forward(np.ones((1, 3, 4, 4), dtype=np.int64), W)
    with pytest.raises(TypeError, match=r"weight has dtype int64; expected float32"):
        ops.conv2d_forward(X, np.ones((2, 3, 3, 3), dtype=np.int64))
    with pytest.raises(TypeError, match=r"z has dtype int64; expected float32 or float64"):
        ops.sigmoid_forward(np.arange(4))
    with pytest.raises(TypeError, match=r"z has dtype int64"):
        ops.relu_forward(np.arange(4))


def test_sigmoid_and_relu_refuse_nan():
    with pytest.raises(
        ValueError, match=r"z holds 1 non-finite value\(s\) \(first at index \(2,\)"
    ):
        ops.sigmoid_forward(np.array([0.0, 1.0, np.nan]))
    with pytest.raises(ValueError, match=r"z holds 1 non-finite value\(s\)"):
        ops.relu_forward(np.array([0.0, np.nan]))


def test_softmax_cross_entropy_refuses_nan_logits():
    """Before: the loss was NaN."""
    logits = RNG.standard_normal((3, 4))
    logits[1, 2] = np.nan
    with pytest.raises(
        ValueError, match=r"logits holds 1 non-finite value\(s\) \(first at index \(1, 2\)"
    ):
        softmax_cross_entropy_forward(logits, np.array([0, 1, 2]))


def test_softmax_cross_entropy_checks_dtypes_and_dloss():
    with pytest.raises(TypeError, match=r"logits has dtype int64"):
        softmax_cross_entropy_forward(np.ones((2, 3), dtype=np.int64), np.array([0, 1]))
    _, cache = softmax_cross_entropy_forward(RNG.standard_normal((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"dloss holds 1 non-finite"):
        softmax_cross_entropy_backward(np.nan, cache)


def test_softmax_cross_entropy_allows_minus_inf_away_from_the_label():
    logits = np.array([[0.0, -np.inf, 1.0]])
    loss, cache = softmax_cross_entropy_forward(logits, np.array([2]))
    assert np.isfinite(loss)
    assert softmax_cross_entropy_backward(1.0, cache)[0, 1] == 0.0


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: ops.conv2d_forward(X, W[:, :2]),
            ValueError,
            r"conv2d expects weight \(F, C, kh, kw\) with x's C = 3",
        ),
        (
            lambda: ops.conv2d_forward(X, W[0]),
            ValueError,
            r"weight has shape \(3, 3, 3\) \(3-D\); expected 4-D",
        ),
        (
            lambda: ops.conv2d_forward(X, W, np.zeros(3)),
            ValueError,
            r"bias has shape \(3,\); expected one value per filter: \(2,\)",
        ),
        (
            lambda: conv_transpose2d_forward(X, W),
            ValueError,
            r"conv_transpose2d expects weight \(C_in, C_out, kh, kw\) with x's C = 3",
        ),
        (
            lambda: ops.linear_forward(np.ones((2, 3)), np.ones((4, 5))),
            ValueError,
            r"weight has shape \(4, 5\); expected \(D_out, D_in\) with x's D_in: \(4, 3\)",
        ),
        (
            lambda: ops.linear_forward(np.ones(3), np.ones((4, 3))),
            ValueError,
            r"x has shape \(3,\) \(1-D\); expected 2-D \(N, D_in\)",
        ),
        (
            lambda: ops.linear_forward(np.ones((2, 3)), np.ones((4, 3)), np.ones(3)),
            ValueError,
            r"bias has shape \(3,\); expected \(D_out,\) = \(4,\)",
        ),
        (
            lambda: ops.linear_forward(np.ones((2, 3), dtype=np.int32), np.ones((4, 3))),
            TypeError,
            r"x has dtype int32",
        ),
        (
            lambda: ops.gate_forward(X, np.ones((2, 3, 1, 1), dtype=np.int64)),
            TypeError,
            r"gate has dtype int64",
        ),
        (
            lambda: ops.gate_forward(X, np.full((2, 3, 1, 1), np.nan)),
            ValueError,
            r"gate holds 6 non-finite",
        ),
        (
            lambda: batchnorm2d_forward(
                X, np.ones(2), np.zeros(3), np.zeros(3), np.ones(3), 1e-5, False
            ),
            ValueError,
            r"gamma has shape \(2,\); expected one value per channel of x: \(3,\)",
        ),
    ],
    ids=[
        "conv-C",
        "conv-weight-3D",
        "conv-bias",
        "convT-C",
        "linear-D",
        "linear-1D",
        "linear-bias",
        "linear-int",
        "gate-int",
        "gate-nan",
        "bn-gamma",
    ],
)
def test_disagreeing_shapes_and_dtypes_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_backward_refuses_dout_of_the_wrong_shape():
    cases = [
        (ops.global_avg_pool_forward(X), ops.global_avg_pool_backward, (2, 4)),
        (ops.global_max_pool_forward(X), ops.global_max_pool_backward, (2, 4)),
        (ops.channel_avg_pool_forward(X), ops.channel_avg_pool_backward, (2, 2, 4, 5)),
        (ops.channel_max_pool_forward(X), ops.channel_max_pool_backward, (2, 1, 4, 4)),
        (ops.conv2d_forward(X, W), ops.conv2d_backward, (2, 2, 3, 3)),
        (ops.linear_forward(X[:, :, 0, 0], W[:, :, 0, 0]), ops.linear_backward, (2, 3)),
        (ops.gate_forward(X, np.ones((2, 3, 1, 1))), ops.gate_backward, (2, 3, 4, 4)),
        (
            batchnorm2d_forward(X, np.ones(3), np.zeros(3), *batch_statistics(X), 1e-5, True),
            batchnorm2d_backward,
            (2, 3, 4, 4),
        ),
    ]
    for (out, cache), backward, wrong in cases:
        with pytest.raises(
            ValueError, match=rf"dout has shape {wrong}".replace("(", r"\(").replace(")", r"\)")
        ):
            backward(np.ones(wrong), cache)
        backward(np.ones(out.shape), cache)  # the right shape is accepted
