"""Global (over H×W) and channel (over C) average and max pooling: finite-difference gradients,
agreement with the loop oracles (winners included), the first-maximum tie policy and the
gradient checker's kink detection on ties."""

import numpy as np
import pytest
from helpers import EXACT, SAFE_MARGIN, assert_gradients_match, distinct_values, seeds, top2_gap
from hypothesis import example, given
from hypothesis import strategies as st

from npcbam import check_op_gradients
from npcbam.ops import (
    channel_avg_pool_backward,
    channel_avg_pool_forward,
    channel_max_pool_backward,
    channel_max_pool_forward,
    global_avg_pool_backward,
    global_avg_pool_forward,
    global_max_pool_backward,
    global_max_pool_forward,
)
from npcbam.ops.reference import (
    channel_avg_pool_backward_naive,
    channel_avg_pool_naive,
    channel_max_pool_backward_naive,
    channel_max_pool_naive,
    global_avg_pool_backward_naive,
    global_avg_pool_naive,
    global_max_pool_backward_naive,
    global_max_pool_naive,
)

# (N, C, H, W) with every axis able to be 1 and H != W allowed
shapes = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))

AVG_POOLS = {
    "global_avg_pool": (global_avg_pool_forward, global_avg_pool_backward),
    "channel_avg_pool": (channel_avg_pool_forward, channel_avg_pool_backward),
}
# name -> (forward, backward, pooled axes)
MAX_POOLS = {
    "global_max_pool": (global_max_pool_forward, global_max_pool_backward, (2, 3)),
    "channel_max_pool": (channel_max_pool_forward, channel_max_pool_backward, 1),
}
ALL_POOLS = {**AVG_POOLS, **{name: pair[:2] for name, pair in MAX_POOLS.items()}}


@pytest.mark.parametrize("name", sorted(AVG_POOLS))
@given(shape=shapes, seed=seeds)
@example(shape=(1, 1, 1, 1), seed=0)
@example(shape=(1, 3, 2, 4), seed=1)
def test_avg_pool_gradient_matches_finite_differences(name, shape, seed):
    """Average pooling's backward spreads exactly the derivative of its forward."""
    forward, backward = AVG_POOLS[name]
    x = np.random.default_rng(seed).standard_normal(shape)
    report = check_op_gradients(forward, backward, {"x": x}, title=name, seed=seed)
    assert_gradients_match(report)


@pytest.mark.parametrize("name", sorted(MAX_POOLS))
@given(shape=shapes, seed=seeds)
@example(shape=(1, 1, 1, 1), seed=0)
@example(shape=(2, 3, 1, 4), seed=1)
def test_max_pool_gradient_matches_finite_differences(name, shape, seed):
    """Max pooling's backward is the derivative of its forward on tie-free inputs whose
    top-two gap is far wider than the finite-difference stencil (so no winner can switch)."""
    forward, backward, axes = MAX_POOLS[name]
    x = distinct_values(np.random.default_rng(seed), shape)
    assert top2_gap(x, axes) >= SAFE_MARGIN
    report = check_op_gradients(forward, backward, {"x": x}, title=name, seed=seed)
    assert_gradients_match(report)


@given(shape=shapes, seed=seeds)
@example(shape=(1, 1, 1, 1), seed=0)
@example(shape=(2, 1, 3, 2), seed=1)
def test_avg_pools_match_loop_oracles(shape, seed):
    """Vectorized average pools (forward and backward) equal their loop definitions."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    n, c, h, w = shape

    out, cache = global_avg_pool_forward(x)
    dout = rng.standard_normal((n, c))
    np.testing.assert_allclose(out, global_avg_pool_naive(x), **EXACT)
    np.testing.assert_allclose(
        global_avg_pool_backward(dout, cache), global_avg_pool_backward_naive(dout, shape), **EXACT
    )

    out, cache = channel_avg_pool_forward(x)
    dout = rng.standard_normal((n, 1, h, w))
    np.testing.assert_allclose(out, channel_avg_pool_naive(x), **EXACT)
    np.testing.assert_allclose(
        channel_avg_pool_backward(dout, cache),
        channel_avg_pool_backward_naive(dout, shape),
        **EXACT,
    )


@given(shape=shapes, seed=seeds, with_ties=st.booleans())
@example(shape=(1, 1, 1, 1), seed=0, with_ties=False)
@example(shape=(2, 3, 2, 3), seed=1, with_ties=True)
def test_max_pools_match_loop_oracles(shape, seed, with_ties):
    """Vectorized max pools pick exactly the oracle's winners (also among many ties, drawn
    from a handful of integers) and route the gradient to the same places."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(np.float64) if with_ties else rng.standard_normal(shape)
    n, c, h, w = shape

    out, cache = global_max_pool_forward(x)
    expected_out, expected_winners = global_max_pool_naive(x)
    np.testing.assert_array_equal(cache.winners, expected_winners)
    np.testing.assert_array_equal(out, expected_out)
    dout = rng.standard_normal((n, c))
    np.testing.assert_array_equal(
        global_max_pool_backward(dout, cache), global_max_pool_backward_naive(dout, x)
    )

    out, cache = channel_max_pool_forward(x)
    expected_out, expected_winners = channel_max_pool_naive(x)
    np.testing.assert_array_equal(cache.winners, expected_winners)
    np.testing.assert_array_equal(out, expected_out)
    dout = rng.standard_normal((n, 1, h, w))
    np.testing.assert_array_equal(
        channel_max_pool_backward(dout, cache), channel_max_pool_backward_naive(dout, x)
    )


def test_global_max_pool_tie_goes_to_first_flat_index():
    """A tie sends the whole gradient to the first maximum in flat h*W + w order (row-major),
    as PyTorch's AdaptiveMaxPool2d does; a channel of equal values sends it to (0, 0)."""
    x = np.array(
        [
            [
                [[1.0, 4.0, 0.0], [4.0, 2.0, 4.0]],  # maxima at (0,1), (1,0), (1,2)
                [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]],  # all tied
            ]
        ]
    )
    out, cache = global_max_pool_forward(x)
    dx = global_max_pool_backward(np.array([[2.0, 3.0]]), cache)
    expected = np.zeros_like(x)
    expected[0, 0, 0, 1] = 2.0
    expected[0, 1, 0, 0] = 3.0
    np.testing.assert_array_equal(out, [[4.0, -1.0]])
    np.testing.assert_array_equal(dx, expected)


def test_channel_max_pool_tie_goes_to_lowest_channel():
    """A tie across channels sends the whole gradient to the lowest maximal channel, as
    PyTorch's max(dim=1) does."""
    x = np.zeros((1, 3, 1, 3))
    x[0, :, 0, 0] = [5.0, 5.0, 1.0]  # channels 0 and 1 tied
    x[0, :, 0, 1] = [0.0, 7.0, 7.0]  # channels 1 and 2 tied
    x[0, :, 0, 2] = [-2.0, -2.0, -2.0]  # all tied
    out, cache = channel_max_pool_forward(x)
    dx = channel_max_pool_backward(np.array([[[[2.0, 3.0, 4.0]]]]), cache)
    expected = np.zeros_like(x)
    expected[0, 0, 0, 0] = 2.0
    expected[0, 1, 0, 1] = 3.0
    expected[0, 0, 0, 2] = 4.0
    np.testing.assert_array_equal(out, [[[[5.0, 7.0, -2.0]]]])
    np.testing.assert_array_equal(dx, expected)


def test_gradcheck_flags_global_max_pool_tie_as_kink():
    """On an exact tie, a ±h step switches the winner: the checker flags both tied coordinates
    as kinks and compares only the other two, never a meaningless difference quotient."""
    x = np.array([[[[1.0, 3.0], [3.0, 0.0]]]])  # (1, 1, 2, 2), tie between flat 1 and 2
    report = check_op_gradients(
        global_max_pool_forward, global_max_pool_backward, {"x": x}, title="global_max_pool tie"
    )
    assert report.kinks == 2
    assert report["x"].kinks == 2
    assert report["x"].checked == 2


@pytest.mark.parametrize("name", sorted(ALL_POOLS))
def test_pools_keep_float32(name):
    """float32 in, float32 out, for the forward and the backward."""
    forward, backward = ALL_POOLS[name]
    x = distinct_values(np.random.default_rng(0), (2, 3, 2, 4)).astype(np.float32)
    out, cache = forward(x)
    dx = backward(np.ones_like(out), cache)
    assert out.dtype == np.float32
    assert dx.dtype == np.float32


@pytest.mark.parametrize("name", sorted(ALL_POOLS))
@given(shape=shapes, seed=seeds)
def test_backward_add_to_accumulates_in_place(name, shape, seed):
    """``backward(dout, cache, add_to=buf)`` adds this path's gradient into ``buf`` (the ``+=``
    of a value used twice) and returns ``buf`` itself: ``buf + backward(dout, cache)``."""
    forward, backward = ALL_POOLS[name]
    rng = np.random.default_rng(seed)
    x = distinct_values(rng, shape)
    out, cache = forward(x)
    dout = rng.standard_normal(out.shape)
    base = rng.standard_normal(shape)
    buf = base.copy()
    returned = backward(dout, cache, add_to=buf)
    assert returned is buf
    np.testing.assert_allclose(buf, base + backward(dout, cache), **EXACT)


@pytest.mark.parametrize("name", sorted(ALL_POOLS))
def test_backward_add_to_works_on_a_strided_view(name):
    """The in-place addition also works when ``add_to`` is not contiguous (a transposed
    view): no silent copy that would lose the update."""
    forward, backward = ALL_POOLS[name]
    rng = np.random.default_rng(3)
    x = distinct_values(rng, (2, 3, 4, 5))
    out, cache = forward(x)
    dout = rng.standard_normal(out.shape)
    storage = np.zeros((5, 4, 3, 2))
    view = storage.transpose(3, 2, 1, 0)  # (2, 3, 4, 5), not C-contiguous
    backward(dout, cache, add_to=view)
    np.testing.assert_allclose(view, backward(dout, cache), **EXACT)


@pytest.mark.parametrize("channels", [1, 255, 256, 300])
def test_channel_max_winner_is_first_maximum_for_many_channels(channels):
    """The first maximal channel wins at a tie, also past 255 channels (where the index
    arithmetic needs more than 8 bits)."""
    x = np.random.default_rng(channels).standard_normal((2, channels, 2, 3))
    x[1, channels // 2, 1, 2] = x[1, channels - 1, 1, 2] = 50.0  # a tie, the later one last
    _, cache = channel_max_pool_forward(x)
    first = np.argmax(x, axis=1)[:, None]  # NumPy's argmax returns the first maximum
    np.testing.assert_array_equal(cache.winners, first)
    assert cache.winners[1, 0, 1, 2] == channels // 2
