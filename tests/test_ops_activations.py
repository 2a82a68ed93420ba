"""Sigmoid and ReLU: finite-difference gradients, agreement with the loop oracles, saturation
without warnings, dtype preservation and the subgradient taken at the ReLU kink."""

import warnings

import numpy as np
import pytest
from helpers import EXACT, SAFE_MARGIN, assert_gradients_match, seeds
from hypothesis import assume, example, given
from hypothesis import strategies as st

from npcbam import check_op_gradients
from npcbam.ops import relu_backward, relu_forward, sigmoid_backward, sigmoid_forward
from npcbam.ops.reference import (
    relu_backward_naive,
    relu_naive,
    sigmoid_backward_naive,
    sigmoid_naive,
)

# (N, C, H, W) with every axis able to be 1 and H != W allowed
shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))


@given(shape=shapes, seed=seeds)
@example(shape=(1, 1, 1, 1), seed=0)
@example(shape=(1, 1, 2, 3), seed=1)
def test_sigmoid_gradient_matches_finite_differences(shape, seed):
    """sigmoid_backward is the derivative of sigmoid_forward, including in the flat tails."""
    z = 3.0 * np.random.default_rng(seed).standard_normal(shape)
    report = check_op_gradients(
        sigmoid_forward, sigmoid_backward, {"z": z}, title="sigmoid", seed=seed
    )
    assert_gradients_match(report)


@given(shape=shapes, seed=seeds)
@example(shape=(1, 1, 1, 1), seed=0)
@example(shape=(2, 1, 3, 2), seed=2)
def test_relu_gradient_matches_finite_differences(shape, seed):
    """relu_backward is the derivative of relu_forward away from the kink at 0."""
    z = 3.0 * np.random.default_rng(seed).standard_normal(shape)
    assume(np.all(np.abs(z) >= SAFE_MARGIN))  # no finite-difference stencil crosses 0
    report = check_op_gradients(relu_forward, relu_backward, {"z": z}, title="relu", seed=seed)
    assert_gradients_match(report)


@given(shape=shapes, seed=seeds)
@example(shape=(1, 1, 1, 1), seed=0)
def test_sigmoid_matches_loop_oracle(shape, seed):
    """Vectorized sigmoid forward and backward equal the element-by-element definitions."""
    rng = np.random.default_rng(seed)
    z = 10.0 * rng.standard_normal(shape)
    dout = rng.standard_normal(shape)
    out, cache = sigmoid_forward(z)
    np.testing.assert_allclose(out, sigmoid_naive(z), **EXACT)
    np.testing.assert_allclose(
        sigmoid_backward(dout, cache), sigmoid_backward_naive(dout, z), **EXACT
    )


@given(shape=shapes, seed=seeds)
@example(shape=(1, 1, 1, 1), seed=0)
def test_relu_matches_loop_oracle(shape, seed):
    """Vectorized ReLU forward and backward equal the loop definitions, exact zeros included."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(shape)
    z[rng.random(shape) < 0.3] = 0.0  # exercise the kink itself
    dout = rng.standard_normal(shape)
    out, cache = relu_forward(z)
    np.testing.assert_allclose(out, relu_naive(z), **EXACT)
    np.testing.assert_allclose(relu_backward(dout, cache), relu_backward_naive(dout, z), **EXACT)


@given(seed=seeds, scale=st.sampled_from([1.0, 10.0, 30.0]))
def test_sigmoid_agrees_with_tanh_form_and_is_symmetric(seed, scale):
    """σ(z) = (1 + tanh(z/2)) / 2 (an independent formula) and σ(-z) = 1 - σ(z)."""
    z = scale * np.random.default_rng(seed).standard_normal(50)
    out, _ = sigmoid_forward(z)
    mirrored, _ = sigmoid_forward(-z)
    np.testing.assert_allclose(out, 0.5 * (1.0 + np.tanh(0.5 * z)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(mirrored, 1.0 - out, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(values=st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=20))
def test_sigmoid_is_warning_free_and_bounded_up_to_1e4(dtype, values):
    """For |z| <= 1e4 sigmoid and its gradient raise no warning (overflow, divide, invalid),
    keep the dtype, and stay finite in [0, 1] and [0, 1/4] times the upstream gradient."""
    z = np.array([-1e4, 1e4, *values], dtype=dtype)
    dout = np.ones_like(z)
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        out, cache = sigmoid_forward(z)
        dz = sigmoid_backward(dout, cache)
    assert out.dtype == dtype and dz.dtype == dtype
    assert np.all(np.isfinite(out)) and np.all((out >= 0) & (out <= 1))
    assert np.all(np.isfinite(dz)) and np.all((dz >= 0) & (dz <= 0.25))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_saturates_to_exact_limits(dtype):
    """At z = ±1e4, e^{-|z|} is far below the smallest subnormal of either dtype, so σ is
    exactly 0 and 1 (not NaN) and its slope exactly 0."""
    z = np.array([-1e4, 1e4], dtype=dtype)
    out, cache = sigmoid_forward(z)
    np.testing.assert_array_equal(out, [0.0, 1.0])
    np.testing.assert_array_equal(sigmoid_backward(np.ones_like(z), cache), [0.0, 0.0])


@pytest.mark.parametrize(
    ("forward", "backward"),
    [(sigmoid_forward, sigmoid_backward), (relu_forward, relu_backward)],
    ids=["sigmoid", "relu"],
)
def test_activations_keep_float32(forward, backward):
    """float32 in, float32 out, for the forward and the backward."""
    z = np.linspace(-3, 3, 12, dtype=np.float32).reshape(1, 2, 2, 3)
    out, cache = forward(z)
    dz = backward(np.ones_like(out), cache)
    assert out.dtype == np.float32
    assert dz.dtype == np.float32


def test_relu_gradient_at_zero_is_zero():
    """At z = 0 (either sign of zero) ReLU takes the subgradient 0, as PyTorch does."""
    z = np.array([-1.0, -0.0, 0.0, 1e-300, 2.0])
    out, cache = relu_forward(z)
    dz = relu_backward(np.array([5.0, 6.0, 7.0, 8.0, 9.0]), cache)
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 1e-300, 2.0])
    np.testing.assert_array_equal(dz, [0.0, 0.0, 0.0, 8.0, 9.0])


def test_gradcheck_flags_relu_kinks_at_zero():
    """An input exactly at the kink is flagged and left out of the comparison, never compared
    with a one-sided difference quotient."""
    z = np.array([[-1.0, 0.0, 2.0, 0.0]])
    report = check_op_gradients(relu_forward, relu_backward, {"z": z}, title="relu at 0")
    assert report["z"].kinks == 2
    assert report["z"].checked == 2
