"""Dense layer and one pass through the shared MLP (dense, ReLU, dense): finite-difference
gradients, agreement with the loop oracles and dtype preservation."""

import numpy as np
import pytest
from helpers import EXACT, SAFE_MARGIN, assert_gradients_match, seeds
from hypothesis import assume, example, given
from hypothesis import strategies as st

from npcbam import check_op_gradients
from npcbam.ops import (
    linear_backward,
    linear_forward,
    shared_mlp_backward,
    shared_mlp_forward,
)
from npcbam.ops.reference import (
    linear_backward_naive,
    linear_naive,
    relu_backward_naive,
    relu_naive,
)

batch_sizes = st.integers(1, 3)
widths = st.integers(1, 5)  # input, output and hidden widths, 1 included


def linear_backward_without_bias(dout, cache):
    """linear_backward for a bias-free forward: (dx, dW), after checking dbias is None."""
    dx, dweight, dbias = linear_backward(dout, cache)
    assert dbias is None
    return dx, dweight


def draw_mlp(rng, n, channels, hidden):
    """A pooled descriptor (N, C) and the two MLP weights (hidden, C), (C, hidden)."""
    v = rng.standard_normal((n, channels))
    w_hidden = rng.standard_normal((hidden, channels))
    w_out = rng.standard_normal((channels, hidden))
    return v, w_hidden, w_out


@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@given(n=batch_sizes, d_in=widths, d_out=widths, seed=seeds)
@example(n=1, d_in=1, d_out=1, seed=0)
@example(n=3, d_in=4, d_out=1, seed=1)
def test_linear_gradient_matches_finite_differences(with_bias, n, d_in, d_out, seed):
    """linear_backward's dx, dW (and db) are the derivatives of x W^T (+ b)."""
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.standard_normal((n, d_in)), "weight": rng.standard_normal((d_out, d_in))}
    if with_bias:
        inputs["bias"] = rng.standard_normal(d_out)
    backward = linear_backward if with_bias else linear_backward_without_bias
    title = f"linear ({'bias' if with_bias else 'no bias'})"
    report = check_op_gradients(linear_forward, backward, inputs, title=title, seed=seed)
    assert_gradients_match(report)


@given(n=batch_sizes, channels=widths, hidden=st.integers(1, 3), seed=seeds)
@example(n=1, channels=1, hidden=1, seed=0)
@example(n=2, channels=4, hidden=1, seed=1)
def test_shared_mlp_gradient_matches_finite_differences(n, channels, hidden, seed):
    """shared_mlp_backward returns the derivatives of W1 relu(W0 v) w.r.t. v, W0 and W1, on
    inputs whose pre-activations stay clear of the ReLU kink."""
    v, w_hidden, w_out = draw_mlp(np.random.default_rng(seed), n, channels, hidden)
    assume(np.all(np.abs(v @ w_hidden.T) >= SAFE_MARGIN))
    report = check_op_gradients(
        shared_mlp_forward,
        lambda dout, cache: shared_mlp_backward(dout, cache)[:3],
        {"v": v, "w_hidden": w_hidden, "w_out": w_out},
        title="shared_mlp",
        seed=seed,
    )
    assert_gradients_match(report)


@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@given(n=batch_sizes, d_in=widths, d_out=widths, seed=seeds)
@example(n=1, d_in=1, d_out=1, seed=0)
def test_linear_matches_loop_oracle(with_bias, n, d_in, d_out, seed):
    """Vectorized dense forward and backward equal the explicit sums; no bias gives dbias None."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in))
    weight = rng.standard_normal((d_out, d_in))
    bias = rng.standard_normal(d_out) if with_bias else None
    dout = rng.standard_normal((n, d_out))
    out, cache = linear_forward(x, weight, bias)
    np.testing.assert_allclose(out, linear_naive(x, weight, bias), **EXACT)
    grads = linear_backward(dout, cache)
    expected = linear_backward_naive(dout, x, weight, with_bias=with_bias)
    for grad, reference in zip(grads[:2], expected[:2]):
        np.testing.assert_allclose(grad, reference, **EXACT)
    if with_bias:
        np.testing.assert_allclose(grads[2], expected[2], **EXACT)
    else:
        assert grads[2] is None


@given(n=batch_sizes, channels=widths, hidden=st.integers(1, 3), seed=seeds)
@example(n=1, channels=1, hidden=1, seed=0)
def test_shared_mlp_matches_composed_loop_oracles(n, channels, hidden, seed):
    """The MLP pass equals linear -> relu -> linear built from the loop oracles, forward and
    backward (the backward chained by hand, last layer first)."""
    rng = np.random.default_rng(seed)
    v, w_hidden, w_out = draw_mlp(rng, n, channels, hidden)
    dout = rng.standard_normal((n, channels))

    pre = linear_naive(v, w_hidden)
    hidden_act = relu_naive(pre)
    expected_out = linear_naive(hidden_act, w_out)
    dhidden, expected_dw_out, _ = linear_backward_naive(dout, hidden_act, w_out)
    dpre = relu_backward_naive(dhidden, pre)
    expected_dv, expected_dw_hidden, _ = linear_backward_naive(dpre, v, w_hidden)

    out, cache = shared_mlp_forward(v, w_hidden, w_out)
    dv, dw_hidden, dw_out, _, _ = shared_mlp_backward(dout, cache)
    np.testing.assert_allclose(out, expected_out, **EXACT)
    np.testing.assert_allclose(dv, expected_dv, **EXACT)
    np.testing.assert_allclose(dw_hidden, expected_dw_hidden, **EXACT)
    np.testing.assert_allclose(dw_out, expected_dw_out, **EXACT)


def test_linear_keeps_float32():
    """float32 in, float32 out, for the forward and every gradient."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    weight = rng.standard_normal((4, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    out, cache = linear_forward(x, weight, bias)
    grads = linear_backward(np.ones_like(out), cache)
    assert out.dtype == np.float32
    assert [g.dtype for g in grads] == [np.float32] * 3


def test_shared_mlp_keeps_float32():
    """float32 in, float32 out, for the MLP pass and its three gradients."""
    v, w_hidden, w_out = (a.astype(np.float32) for a in draw_mlp(np.random.default_rng(0), 2, 4, 2))
    out, cache = shared_mlp_forward(v, w_hidden, w_out)
    grads = shared_mlp_backward(np.ones_like(out), cache)[:3]
    assert out.dtype == np.float32
    assert [g.dtype for g in grads] == [np.float32] * 3
