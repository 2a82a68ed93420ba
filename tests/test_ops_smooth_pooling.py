"""L2 ("lp") and log-sum-exp ("lse") global pooling: agreement with the loop oracles,
finite-difference gradients, numerical stability of log-sum-exp far from 0, the zero-gradient
convention of L2 pooling on an all-zero channel, ``add_to`` and dtypes.

Warnings are errors in this suite (``pyproject.toml``), so an overflow in ``exp`` or a division
by a zero norm fails the test that provokes it.
"""

import numpy as np
import pytest
from helpers import EXACT, assert_gradients_match, seeds
from hypothesis import assume, example, given
from hypothesis import strategies as st

from npcbam import check_op_gradients
from npcbam.ops.reference import (
    global_lp_pool_backward_naive,
    global_lp_pool_naive,
    global_lse_pool_backward_naive,
    global_lse_pool_naive,
)
from npcbam.ops.smooth_pooling import (
    global_lp_pool_backward,
    global_lp_pool_forward,
    global_lse_pool_backward,
    global_lse_pool_forward,
)

# (N, C, H, W) with every axis able to be 1 and H != W allowed
shapes = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))

# name -> (forward, backward, forward oracle, backward oracle)
POOLS = {
    "lp": (
        global_lp_pool_forward,
        global_lp_pool_backward,
        global_lp_pool_naive,
        global_lp_pool_backward_naive,
    ),
    "lse": (
        global_lse_pool_forward,
        global_lse_pool_backward,
        global_lse_pool_naive,
        global_lse_pool_backward_naive,
    ),
}

# An L2 norm's derivatives grow like 1/norm: finite differences (step 1e-4, error of order
# h^4 f^(5)) stay within 1e-6 only for channels whose norm is well away from 0.
MIN_NORM = 0.1


# -- agreement with the loop oracles ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(POOLS))
@given(shape=shapes, scale=st.sampled_from([1e-3, 1.0, 30.0]), seed=seeds)
@example(shape=(1, 1, 1, 1), scale=1.0, seed=0)  # a single value: lp = |x|, lse = x
@example(shape=(2, 3, 1, 4), scale=30.0, seed=1)  # H = 1, exps down to e^-100
def test_pool_matches_loop_oracle(name, shape, scale, seed):
    """Forward and backward equal their loop definitions, at small and large magnitudes."""
    forward, backward, forward_naive, backward_naive = POOLS[name]
    rng = np.random.default_rng(seed)
    x = scale * rng.standard_normal(shape)
    dout = rng.standard_normal(shape[:2])
    out, cache = forward(x)
    assert out.shape == shape[:2]
    np.testing.assert_allclose(out, forward_naive(x), **EXACT)
    np.testing.assert_allclose(backward(dout, cache), backward_naive(dout, x), **EXACT)


@given(shape=shapes, seed=seeds)
def test_pool_values_are_what_they_claim(shape, seed):
    """lp is the L2 norm of each channel (``np.linalg.norm``), so at least its largest
    magnitude; lse lies between the maximum and the maximum plus log(H W)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    n, c, h, w = shape
    flat = x.reshape(n, c, h * w)
    lp, _ = global_lp_pool_forward(x)
    np.testing.assert_allclose(lp, np.linalg.norm(flat, axis=2), **EXACT)
    assert (lp >= np.abs(flat).max(axis=2) * (1 - 1e-15)).all()
    lse, _ = global_lse_pool_forward(x)
    top = flat.max(axis=2)
    assert (lse >= top).all()
    assert (lse <= top + np.log(h * w) + 1e-12).all()


# -- finite differences -------------------------------------------------------------------------
@given(shape=shapes, seed=seeds)
@example(shape=(1, 1, 1, 1), seed=0)
@example(shape=(2, 3, 2, 4), seed=1)
def test_lp_pool_gradient_matches_finite_differences(shape, seed):
    """L2 pooling's backward is the derivative of its forward (every channel's norm kept
    away from 0, the one place where the norm has no derivative)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    assume(np.sqrt((x**2).sum(axis=(2, 3))).min() >= MIN_NORM)
    report = check_op_gradients(
        global_lp_pool_forward, global_lp_pool_backward, {"x": x}, title="lp", seed=seed
    )
    assert_gradients_match(report)


@given(shape=shapes, scale=st.sampled_from([0.1, 1.0, 5.0]), seed=seeds)
@example(shape=(1, 1, 1, 1), scale=1.0, seed=0)
@example(shape=(2, 3, 4, 1), scale=5.0, seed=1)
def test_lse_pool_gradient_matches_finite_differences(shape, scale, seed):
    """Log-sum-exp's backward (the softmax) is the derivative of its forward, from nearly
    uniform weights (small scale) to nearly one-hot ones (large scale)."""
    x = scale * np.random.default_rng(seed).standard_normal(shape)
    report = check_op_gradients(
        global_lse_pool_forward, global_lse_pool_backward, {"x": x}, title="lse", seed=seed
    )
    assert_gradients_match(report)


# -- log-sum-exp far from 0 ---------------------------------------------------------------------
@pytest.mark.parametrize("offset", [1e4, -1e4, 700.0, -750.0])
def test_lse_pool_is_stable_far_from_zero(offset):
    """Inputs near ±1e4, where ``exp`` overflows (above ~709.8) or underflows to 0 (below
    ~-745): the result is the stable value ``offset + lse(x - offset)`` and the gradient the
    softmax of ``x - offset``, with no warning (warnings are errors here) and nothing infinite.
    A naive ``log(sum(exp(x)))`` would give inf or -inf."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 3, 4, 5))
    x = offset + base
    dout = rng.standard_normal((2, 3))
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        out, cache = global_lse_pool_forward(x)
        dx = global_lse_pool_backward(dout, cache)
    assert np.isfinite(out).all() and np.isfinite(dx).all()
    base_out, base_cache = global_lse_pool_forward(base)
    np.testing.assert_allclose(out, offset + base_out, rtol=1e-15, atol=0)
    np.testing.assert_allclose(
        dx, global_lse_pool_backward(dout, base_cache), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(dx.sum(axis=(2, 3)), dout, rtol=1e-12, atol=1e-12)


def test_lse_pool_with_a_huge_spread_in_one_channel():
    """One channel holding both 1e4 and -1e4: the small values' weights underflow to exactly
    0 (harmless), the result is the maximum, and the whole gradient goes to it."""
    x = np.array([[[[1e4, -1e4], [-1e4, 0.0]]]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        out, cache = global_lse_pool_forward(x)
        dx = global_lse_pool_backward(np.array([[2.0]]), cache)
    np.testing.assert_array_equal(out, [[1e4]])
    np.testing.assert_array_equal(dx, [[[[2.0, 0.0], [0.0, 0.0]]]])


@given(shape=shapes, shift=st.floats(-1e3, 1e3), seed=seeds)
def test_lse_pool_shifts_with_its_input(shape, shift, seed):
    """lse(x + s) = lse(x) + s, and the gradient (the softmax) does not move."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    dout = rng.standard_normal(shape[:2])
    out, cache = global_lse_pool_forward(x)
    shifted_out, shifted_cache = global_lse_pool_forward(x + shift)
    np.testing.assert_allclose(shifted_out, out + shift, rtol=0, atol=1e-12 * (1 + abs(shift)))
    np.testing.assert_allclose(
        global_lse_pool_backward(dout, shifted_cache),
        global_lse_pool_backward(dout, cache),
        rtol=1e-9,
        atol=1e-12,
    )


# -- L2 pooling at an all-zero channel ----------------------------------------------------------
def test_lp_pool_zero_channel_gets_zero_gradient():
    """The norm of an all-zero channel is 0 and has no derivative there; the documented
    convention is a zero gradient (not NaN, and no division-by-zero warning), while the other
    channels get their usual x / norm share."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 2, 3))
    x[0, 1] = 0.0
    x[1, 2] = -0.0
    dout = rng.standard_normal((2, 3))
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        out, cache = global_lp_pool_forward(x)
        dx = global_lp_pool_backward(dout, cache)
    assert out[0, 1] == 0.0 and out[1, 2] == 0.0
    assert np.isfinite(dx).all()
    np.testing.assert_array_equal(dx[0, 1], 0.0)
    np.testing.assert_array_equal(dx[1, 2], 0.0)
    np.testing.assert_allclose(dx, global_lp_pool_backward_naive(dout, x), **EXACT)
    live = np.ones((2, 3), dtype=bool)
    live[0, 1] = live[1, 2] = False
    norms = np.sqrt((x**2).sum(axis=(2, 3)))
    expected = x * (dout / np.where(live, norms, 1.0))[:, :, None, None]
    np.testing.assert_allclose(dx[live], expected[live], **EXACT)


def test_lp_pool_single_value_is_absolute_value():
    """With one position, L2 pooling is |x| and its gradient sign(x) * dout."""
    x = np.array([[[[-3.0]], [[2.0]]]])
    out, cache = global_lp_pool_forward(x)
    np.testing.assert_array_equal(out, [[3.0, 2.0]])
    np.testing.assert_array_equal(
        global_lp_pool_backward(np.array([[5.0, 7.0]]), cache), [[[[-5.0]], [[7.0]]]]
    )


# -- add_to and dtypes --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(POOLS))
def test_backward_add_to_adds_in_place(name):
    """``add_to`` receives the gradient in place (the very array is returned) and keeps what
    it held: the ``+=`` of a sum over the uses of x."""
    forward, backward, _, _ = POOLS[name]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 2))
    dout = rng.standard_normal((2, 3))
    _, cache = forward(x)
    alone = backward(dout, cache)
    held = rng.standard_normal(x.shape)
    target = held.copy()
    returned = backward(dout, cache, add_to=target)
    assert returned is target
    np.testing.assert_allclose(target, held + alone, **EXACT)


@pytest.mark.parametrize("name", sorted(POOLS))
@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_float32_in_float32_out(name, offset):
    """float32 input gives float32 output and float32 gradients (``add_to`` float32 too), close
    to the float64 results."""
    forward, backward, _, _ = POOLS[name]
    rng = np.random.default_rng(2)
    x = (offset + rng.standard_normal((2, 3, 4, 5))).astype(np.float32)
    dout = rng.standard_normal((2, 3)).astype(np.float32)
    out, cache = forward(x)
    dx = backward(dout, cache)
    assert out.dtype == np.float32 and dx.dtype == np.float32
    target = np.zeros_like(x)
    assert backward(dout, cache, add_to=target).dtype == np.float32
    out64, cache64 = forward(x.astype(np.float64))
    dx64 = backward(dout.astype(np.float64), cache64)
    np.testing.assert_allclose(out, out64, rtol=1e-6)
    np.testing.assert_allclose(dx, dx64, rtol=1e-5, atol=1e-6 * np.abs(dx64).max())
