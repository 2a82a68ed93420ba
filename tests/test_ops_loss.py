"""The classifier's pieces: softmax cross-entropy (finite-difference gradient, loop oracle,
huge logits, hand-computed values, bad labels, dtypes) and the shared MLP with its optional
biases (finite differences and loop oracles)."""

import math

import numpy as np
import pytest
from helpers import EXACT, SAFE_MARGIN, assert_gradients_match, seeds
from hypothesis import assume, example, given
from hypothesis import strategies as st

from npcbam import check_op_gradients
from npcbam.ops import shared_mlp_backward, shared_mlp_forward
from npcbam.ops.loss import (
    log_softmax,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from npcbam.ops.reference import (
    linear_backward_naive,
    linear_naive,
    relu_backward_naive,
    relu_naive,
    softmax_cross_entropy_backward_naive,
    softmax_cross_entropy_naive,
)

batch_sizes = st.integers(1, 4)
class_counts = st.integers(1, 6)  # K = 1 included: the loss is then identically 0


def draw_logits(rng, n, k, scale=3.0):
    """Normal logits (N, K) and labels (N,) uniform over the K classes."""
    return scale * rng.standard_normal((n, k)), rng.integers(0, k, n)


@given(n=batch_sizes, k=class_counts, seed=seeds)
@example(n=1, k=1, seed=0)
@example(n=4, k=2, seed=1)
def test_cross_entropy_gradient_matches_finite_differences(n, k, seed):
    """(softmax(z) - onehot(y)) / N is the derivative of the mean cross-entropy."""
    logits, labels = draw_logits(np.random.default_rng(seed), n, k)
    report = check_op_gradients(
        lambda z: softmax_cross_entropy_forward(z, labels),
        softmax_cross_entropy_backward,
        {"logits": logits},
        title="softmax_cross_entropy",
        seed=seed,
    )
    assert_gradients_match(report)


@given(n=batch_sizes, k=class_counts, dloss=st.floats(-3, 3), seed=seeds)
@example(n=1, k=1, dloss=1.0, seed=0)
def test_cross_entropy_matches_loop_oracle(n, k, dloss, seed):
    """Loss and gradient equal the row-by-row loops (math.exp, math.log), for any dloss."""
    logits, labels = draw_logits(np.random.default_rng(seed), n, k, scale=10.0)
    loss, cache = softmax_cross_entropy_forward(logits, labels)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, softmax_cross_entropy_naive(logits, labels), **EXACT)
    np.testing.assert_allclose(
        softmax_cross_entropy_backward(dloss, cache),
        softmax_cross_entropy_backward_naive(logits, labels, dloss),
        **EXACT,
    )


def test_cross_entropy_by_hand():
    """Two classes with equal logits: log 2; logits (0, log 3) and label 1: log(4/3)."""
    loss, _ = softmax_cross_entropy_forward(np.zeros((1, 2)), np.array([0]))
    assert loss == pytest.approx(math.log(2), rel=1e-15)
    loss, cache = softmax_cross_entropy_forward(np.array([[0.0, math.log(3)]]), np.array([1]))
    assert loss == pytest.approx(math.log(4 / 3), rel=1e-14)
    np.testing.assert_allclose(softmax_cross_entropy_backward(1.0, cache), [[0.25, -0.25]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_do_not_overflow(dtype):
    """Logits of +-1e4 (e^1e4 overflows any float): no warning (warnings are errors here),
    finite results, and the loss equals the log-sum-exp worked out by hand:
    row 0: lse(1e4, 0, -1e4) = 1e4 + log(1 + e^-1e4 + e^-2e4) = 1e4 to double precision, the
    label's logit is 0, loss 1e4; row 1: lse(1e4, 1e4) = 1e4 + log 2, label logit 1e4, loss
    log 2. Mean: (1e4 + log 2) / 2."""
    logits = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    labels = np.array([1, 0])
    loss, cache = softmax_cross_entropy_forward(logits, labels)
    assert loss == pytest.approx((1e4 + math.log(2)) / 2, rel=1e-7)
    dlogits = softmax_cross_entropy_backward(1.0, cache)
    assert dlogits.dtype == dtype and np.isfinite(dlogits).all()
    expected = np.array([[1.0, -1.0, 0.0], [-0.5, 0.5, 0.0]]) / 2  # (softmax - onehot) / N
    np.testing.assert_allclose(dlogits, expected, atol=1e-7)
    assert np.isfinite(log_softmax(logits)).all()


@given(n=batch_sizes, k=st.integers(2, 6), seed=seeds)
def test_log_softmax_rows_normalise(n, k, seed):
    """exp(log_softmax) sums to 1 in each row; adding a constant to a row changes nothing."""
    logits, _ = draw_logits(np.random.default_rng(seed), n, k)
    log_probs = log_softmax(logits)
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(log_softmax(logits + 123.0), log_probs, atol=1e-12)


@pytest.mark.parametrize(
    ("logits", "labels", "error", "message"),
    [
        (np.zeros((2, 3)), np.array([0, 3]), ValueError, r"label 3 is outside \[0, 3\)"),
        (np.zeros((2, 3)), np.array([-1, 0]), ValueError, r"label -1 is outside \[0, 3\)"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), TypeError, r"dtype float64; expected integ"),
        (np.zeros((2, 3)), np.array([0, 1, 2]), ValueError, r"\(2, 3\) and \(3,\)"),
        (np.zeros(3), np.array([0]), ValueError, r"expected logits \(N, K\)"),
    ],
    ids=["label_too_large", "negative_label", "float_labels", "label_count", "1-D_logits"],
)
def test_cross_entropy_rejects_bad_labels(logits, labels, error, message):
    with pytest.raises(error, match=message):
        softmax_cross_entropy_forward(logits, labels)


# The shared MLP with both biases (seed code 2, the official CBAM).


def draw_mlp_with_biases(rng, n, channels, hidden):
    """v (N, C), W0 (hidden, C), W1 (C, hidden), b0 (hidden,), b1 (C,)."""
    return (
        rng.standard_normal((n, channels)),
        rng.standard_normal((hidden, channels)),
        rng.standard_normal((channels, hidden)),
        rng.standard_normal(hidden),
        rng.standard_normal(channels),
    )


@given(n=st.integers(1, 3), channels=st.integers(1, 5), hidden=st.integers(1, 3), seed=seeds)
@example(n=1, channels=1, hidden=1, seed=0)
def test_shared_mlp_with_biases_gradient_matches_finite_differences(n, channels, hidden, seed):
    """All five gradients (v, W0, W1, b0, b1), pre-activations kept clear of the ReLU kink."""
    v, w_hidden, w_out, b_hidden, b_out = draw_mlp_with_biases(
        np.random.default_rng(seed), n, channels, hidden
    )
    assume(np.all(np.abs(v @ w_hidden.T + b_hidden) >= SAFE_MARGIN))
    report = check_op_gradients(
        shared_mlp_forward,
        shared_mlp_backward,
        {"v": v, "w_hidden": w_hidden, "w_out": w_out, "b_hidden": b_hidden, "b_out": b_out},
        title="shared_mlp with biases",
        seed=seed,
    )
    assert_gradients_match(report)


@given(n=st.integers(1, 3), channels=st.integers(1, 5), hidden=st.integers(1, 3), seed=seeds)
def test_shared_mlp_with_biases_matches_composed_loop_oracles(n, channels, hidden, seed):
    """linear(+b0) -> relu -> linear(+b1) from the loop oracles, forward and backward."""
    rng = np.random.default_rng(seed)
    v, w_hidden, w_out, b_hidden, b_out = draw_mlp_with_biases(rng, n, channels, hidden)
    dout = rng.standard_normal((n, channels))

    pre = linear_naive(v, w_hidden, b_hidden)
    hidden_act = relu_naive(pre)
    expected_out = linear_naive(hidden_act, w_out, b_out)
    dhidden, expected_dw_out, expected_db_out = linear_backward_naive(
        dout, hidden_act, w_out, with_bias=True
    )
    dpre = relu_backward_naive(dhidden, pre)
    expected = linear_backward_naive(dpre, v, w_hidden, with_bias=True)

    out, cache = shared_mlp_forward(v, w_hidden, w_out, b_hidden, b_out)
    dv, dw_hidden, dw_out, db_hidden, db_out = shared_mlp_backward(dout, cache)
    np.testing.assert_allclose(out, expected_out, **EXACT)
    np.testing.assert_allclose(dv, expected[0], **EXACT)
    np.testing.assert_allclose(dw_hidden, expected[1], **EXACT)
    np.testing.assert_allclose(db_hidden, expected[2], **EXACT)
    np.testing.assert_allclose(dw_out, expected_dw_out, **EXACT)
    np.testing.assert_allclose(db_out, expected_db_out, **EXACT)


def test_shared_mlp_without_biases_returns_none_for_them():
    """No biases in the forward: the backward's two bias gradients are None."""
    v, w_hidden, w_out, _, _ = draw_mlp_with_biases(np.random.default_rng(0), 2, 4, 2)
    out, cache = shared_mlp_forward(v, w_hidden, w_out)
    *_, db_hidden, db_out = shared_mlp_backward(np.ones_like(out), cache)
    assert db_hidden is None and db_out is None


def test_shared_mlp_with_biases_keeps_float32():
    """float32 in, float32 out, for the output and all five gradients."""
    arrays = draw_mlp_with_biases(np.random.default_rng(0), 2, 4, 2)
    out, cache = shared_mlp_forward(*(a.astype(np.float32) for a in arrays))
    grads = shared_mlp_backward(np.ones_like(out), cache)
    assert out.dtype == np.float32
    assert [g.dtype for g in grads] == [np.float32] * 5
