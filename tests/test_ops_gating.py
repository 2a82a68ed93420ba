"""Gating (x times a broadcast attention map) and concatenation: finite-difference gradients,
agreement with the loop oracles, shape validation and dtype preservation."""

import numpy as np
import pytest
from helpers import EXACT, assert_gradients_match, seeds
from hypothesis import example, given
from hypothesis import strategies as st

from npcbam import check_op_gradients
from npcbam.ops import concat_backward, concat_forward, gate_backward, gate_forward
from npcbam.ops.reference import gate_backward_naive, gate_naive

# (N, C, H, W) with every axis able to be 1 and H != W allowed
shapes = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))
# CBAM's two attention maps, and a full-size map for good measure
GATE_KINDS = ("channel", "spatial", "full")


def gate_shape(kind, x_shape):
    """(N, C, 1, 1) for channel attention, (N, 1, H, W) for spatial attention, or x's shape."""
    n, c, h, w = x_shape
    return {"channel": (n, c, 1, 1), "spatial": (n, 1, h, w), "full": (n, c, h, w)}[kind]


@pytest.mark.parametrize("kind", GATE_KINDS)
@given(shape=shapes, seed=seeds)
@example(shape=(1, 1, 1, 1), seed=0)
@example(shape=(2, 3, 2, 4), seed=1)
def test_gate_gradient_matches_finite_differences(kind, shape, seed):
    """gate_backward's dx and the un-broadcast dgate are the derivatives of x * gate."""
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.standard_normal(shape), "gate": rng.standard_normal(gate_shape(kind, shape))}
    report = check_op_gradients(
        gate_forward, gate_backward, inputs, title=f"gate ({kind})", seed=seed
    )
    assert_gradients_match(report)


@given(
    shape=shapes,
    sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    axis=st.integers(0, 3),
    seed=seeds,
)
@example(shape=(1, 1, 1, 1), sizes=[1, 1], axis=1, seed=0)
@example(shape=(2, 1, 3, 2), sizes=[1, 2, 1], axis=1, seed=1)
def test_concat_gradient_matches_finite_differences(shape, sizes, axis, seed):
    """concat_backward hands each part the derivative of the concatenation w.r.t. it."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for i, size in enumerate(sizes):
        part_shape = list(shape)
        part_shape[axis] = size
        inputs[f"part{i}"] = rng.standard_normal(part_shape)
    report = check_op_gradients(
        lambda *parts: concat_forward(list(parts), axis=axis),
        concat_backward,
        inputs,
        title="concat",
        seed=seed,
    )
    assert_gradients_match(report)


@pytest.mark.parametrize("kind", GATE_KINDS)
@given(shape=shapes, seed=seeds)
@example(shape=(1, 1, 1, 1), seed=0)
def test_gate_matches_loop_oracle(kind, shape, seed):
    """Vectorized gating forward and backward equal the element-by-element product rule."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    gate = rng.standard_normal(gate_shape(kind, shape))
    dout = rng.standard_normal(shape)
    out, cache = gate_forward(x, gate)
    dx, dgate = gate_backward(dout, cache)
    expected_dx, expected_dgate = gate_backward_naive(dout, x, gate)
    np.testing.assert_allclose(out, gate_naive(x, gate), **EXACT)
    np.testing.assert_allclose(dx, expected_dx, **EXACT)
    assert dgate.shape == gate.shape
    np.testing.assert_allclose(dgate, expected_dgate, **EXACT)


@given(shape=shapes, seed=seeds)
def test_concat_stacks_and_splits_along_channels(shape, seed):
    """The max- and mean-maps stack on axis 1 in order, and the backward gives each its own
    slice of the upstream gradient."""
    rng = np.random.default_rng(seed)
    first = rng.standard_normal(shape)
    second = rng.standard_normal((shape[0], 1, *shape[2:]))
    out, cache = concat_forward([first, second], axis=1)
    c = shape[1]
    assert out.shape == (shape[0], c + 1, *shape[2:])
    np.testing.assert_array_equal(out[:, :c], first)
    np.testing.assert_array_equal(out[:, c:], second)
    dout = rng.standard_normal(out.shape)
    dfirst, dsecond = concat_backward(dout, cache)
    np.testing.assert_array_equal(dfirst, dout[:, :c])
    np.testing.assert_array_equal(dsecond, dout[:, c:])


@pytest.mark.parametrize(
    "bad_gate_shape",
    [(2, 4, 1, 1), (2, 3, 5, 1), (2, 3), (2, 3, 4, 5, 1), (3, 1, 4, 5)],
    ids=["too_many_channels", "wrong_height", "too_few_dims", "too_many_dims", "wrong_batch"],
)
def test_gate_rejects_non_broadcastable_gate(bad_gate_shape):
    """A gate that does not broadcast to x (2, 3, 4, 5) axis by axis raises ValueError naming
    both shapes, rather than broadcasting silently to something else."""
    x = np.ones((2, 3, 4, 5))
    with pytest.raises(ValueError, match="broadcast") as error:
        gate_forward(x, np.ones(bad_gate_shape))
    assert str(bad_gate_shape) in str(error.value)
    assert str(x.shape) in str(error.value)


def test_gate_rejects_gate_larger_than_x():
    """A gate of size > 1 where x has size 1 would enlarge the output: rejected."""
    with pytest.raises(ValueError, match="broadcast"):
        gate_forward(np.ones((1, 3, 1, 1)), np.ones((1, 3, 2, 2)))


@pytest.mark.parametrize("kind", GATE_KINDS)
def test_gate_keeps_float32(kind):
    """float32 in, float32 out, for the forward and both gradients."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 2, 4)).astype(np.float32)
    gate = rng.standard_normal(gate_shape(kind, x.shape)).astype(np.float32)
    out, cache = gate_forward(x, gate)
    dx, dgate = gate_backward(np.ones_like(out), cache)
    assert out.dtype == np.float32
    assert dx.dtype == np.float32
    assert dgate.dtype == np.float32


def test_concat_keeps_float32():
    """float32 parts give a float32 concatenation and float32 part gradients."""
    parts = [np.ones((1, 1, 2, 3), np.float32), np.zeros((1, 2, 2, 3), np.float32)]
    out, cache = concat_forward(parts, axis=1)
    grads = concat_backward(np.ones_like(out), cache)
    assert out.dtype == np.float32
    assert [g.dtype for g in grads] == [np.float32, np.float32]
