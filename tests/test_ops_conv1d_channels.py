"""ECA's 1-D convolution across channels: finite differences, the loop oracle, conv2d with a
(1, k) kernel over an (N, 1, 1, C) map, dtypes, bad input, and planted backward bugs (padding
off by one, a flipped kernel gradient) that the gradient check must catch."""

import numpy as np
import pytest
from helpers import EXACT, assert_gradients_match, seeds
from hypothesis import example, given
from hypothesis import strategies as st

from npcbam import check_op_gradients
from npcbam.ops import conv1d_channels_backward, conv1d_channels_forward, conv2d_forward
from npcbam.ops.conv import conv2d_backward
from npcbam.ops.conv1d_channels import Conv1dChannelsCache
from npcbam.ops.reference import conv1d_channels_backward_naive, conv1d_channels_naive
from npcbam.testing import assert_gradients

# N, C, k (odd, also larger than C: the op pads whatever k; ECA itself refuses k > C)
cases = st.tuples(st.integers(1, 3), st.integers(1, 9), st.sampled_from([1, 3, 5, 7, 9]))


def draw(seed: int, n: int, c: int, k: int):
    """v (N, C), a kernel (k,) and an upstream gradient (N, C), all with distinct entries.

    Drawn from the stream ``(seed, 1)``, not ``seed``: the gradient checker draws its upstream
    gradient from ``default_rng(seed)``, and with the same stream it would equal v, which makes
    the kernel gradient symmetric and hides a flipped one."""
    rng = np.random.default_rng((seed, 1))
    return rng.standard_normal((n, c)), rng.standard_normal(k), rng.standard_normal((n, c))


@given(case=cases, seed=seeds)
@example(case=(1, 1, 1), seed=0)  # one image, one channel, one tap
@example(case=(2, 3, 9), seed=1)  # kernel far longer than the channel vector
@example(case=(1, 9, 3), seed=2)
def test_finite_differences(case, seed):
    v, weight, _ = draw(seed, *case)
    assert_gradients(
        conv1d_channels_forward,
        conv1d_channels_backward,
        {"v": v, "weight": weight},
        seed=seed,
    )


@given(case=cases, seed=seeds)
@example(case=(1, 5, 5), seed=0)  # k = C: the end taps reach one real channel each
def test_matches_loop_oracle(case, seed):
    v, weight, dout = draw(seed, *case)
    out, cache = conv1d_channels_forward(v, weight)
    dv, dweight = conv1d_channels_backward(dout, cache)
    expected_dv, expected_dweight = conv1d_channels_backward_naive(dout, v, weight)
    np.testing.assert_allclose(out, conv1d_channels_naive(v, weight), **EXACT)
    np.testing.assert_allclose(dv, expected_dv, **EXACT)
    np.testing.assert_allclose(dweight, expected_dweight, **EXACT)


@given(case=cases, seed=seeds)
def test_is_conv2d_with_a_1_by_k_kernel(case, seed):
    """The op is conv2d on the (N, 1, 1, C) map with a (1, 1, 1, k) kernel and padding
    (0, (k - 1)/2): same output, same input and kernel gradients."""
    v, weight, dout = draw(seed, *case)
    n, c = v.shape
    k = weight.shape[0]
    out, cache = conv1d_channels_forward(v, weight)
    dv, dweight = conv1d_channels_backward(dout, cache)
    # (N, C) -> (N, 1, 1, C) and (k,) -> (1, 1, 1, k)
    out_2d, cache_2d = conv2d_forward(
        v.reshape(n, 1, 1, c), weight.reshape(1, 1, 1, k), padding=(0, (k - 1) // 2)
    )
    dv_2d, dweight_2d, _ = conv2d_backward(dout.reshape(n, 1, 1, c), cache_2d)
    np.testing.assert_allclose(out, out_2d.reshape(n, c), **EXACT)
    np.testing.assert_allclose(dv, dv_2d.reshape(n, c), **EXACT)
    np.testing.assert_allclose(dweight, dweight_2d.reshape(k), **EXACT)


def test_a_hand_computed_case():
    """C = 4, k = 3, p = 1: y_c = w_0 v_{c-1} + w_1 v_c + w_2 v_{c+1}, zeros beyond the ends."""
    v = np.array([[1.0, 2.0, 3.0, 4.0]])
    weight = np.array([10.0, 100.0, 1000.0])
    out, cache = conv1d_channels_forward(v, weight)
    np.testing.assert_array_equal(out, [[2100.0, 3210.0, 4320.0, 430.0]])
    dv, dweight = conv1d_channels_backward(np.array([[1.0, 0.0, 0.0, 0.0]]), cache)
    np.testing.assert_array_equal(dv, [[100.0, 1000.0, 0.0, 0.0]])  # y_0 reads v_0 and v_1
    np.testing.assert_array_equal(dweight, [0.0, 1.0, 2.0])  # w_0 met the padding zero


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keeps_the_dtype(dtype):
    v, weight, dout = (a.astype(dtype) for a in draw(3, 2, 6, 3))
    out, cache = conv1d_channels_forward(v, weight)
    dv, dweight = conv1d_channels_backward(dout, cache)
    assert out.dtype == dv.dtype == dweight.dtype == dtype
    assert dv.flags.c_contiguous


@pytest.mark.parametrize(
    ("v", "weight", "error", "message"),
    [
        (np.ones((2, 4)), np.ones(2), ValueError, r"weight's length\)=2 is even"),
        (np.ones((2, 4, 1)), np.ones(3), ValueError, r"v has shape \(2, 4, 1\) \(3-D\)"),
        (np.ones((2, 4)), np.ones((1, 1, 3)), ValueError, r"weight has shape \(1, 1, 3\)"),
        (np.ones((2, 4), dtype=int), np.ones(3), TypeError, r"v has dtype int64"),
        (np.ones((0, 4)), np.ones(3), ValueError, r"every dimension must be at least 1"),
        (np.full((2, 4), np.nan), np.ones(3), ValueError, r"v holds 8 non-finite"),
    ],
    ids=["even", "3-D v", "3-D weight", "int", "empty", "nan"],
)
def test_bad_forward_input(v, weight, error, message):
    with pytest.raises(error, match=message):
        conv1d_channels_forward(v, weight)


def test_bad_upstream_gradient():
    _, cache = conv1d_channels_forward(np.ones((2, 4)), np.ones(3))
    with pytest.raises(ValueError, match=r"dout has shape \(4, 2\); expected the output's"):
        conv1d_channels_backward(np.ones((4, 2)), cache)
    with pytest.raises(ValueError, match=r"dout holds 1 non-finite"):
        conv1d_channels_backward(np.array([[1.0, np.inf, 0.0, 0.0], [0.0] * 4]), cache)


# -- planted bugs: each must fail the gradient check --------------------------------------------
def padding_off_by_one_backward(dout, cache: Conv1dChannelsCache):
    """The correct dv, but the kernel gradient read from windows padded one channel too far on
    the left (p + 1, then p - 1): every tap is paired with its neighbour's input."""
    dv, _ = conv1d_channels_backward(dout, cache)
    k = cache.weight.shape[0]
    p = (k - 1) // 2
    shifted = np.pad(cache.v, ((0, 0), (p + 1, p - 1)))  # still C + k - 1 long
    windows = np.lib.stride_tricks.sliding_window_view(shifted, k, axis=1)  # (N, C, k)
    return dv, np.tensordot(dout, windows, axes=([0, 1], [0, 1]))


def flipped_kernel_gradient_backward(dout, cache: Conv1dChannelsCache):
    """The kernel gradient reversed: the 1-D analogue of a transposed weight gradient."""
    dv, dweight = conv1d_channels_backward(dout, cache)
    return dv, dweight[::-1]


def scaled_backward(dout, cache: Conv1dChannelsCache):
    dv, dweight = conv1d_channels_backward(dout, cache)
    return 1.01 * dv, dweight


@pytest.mark.parametrize(
    ("backward", "failing"),
    [
        (conv1d_channels_backward, set()),
        (padding_off_by_one_backward, {"weight"}),
        (flipped_kernel_gradient_backward, {"weight"}),
        (scaled_backward, {"v"}),
    ],
    ids=["correct", "padding off by one", "flipped kernel gradient", "dv scaled by 1.01"],
)
def test_planted_bugs_fail(backward, failing):
    v, weight, _ = draw(5, 2, 7, 3)
    report = check_op_gradients(
        conv1d_channels_forward, backward, {"v": v, "weight": weight}, seed=5
    )
    assert {row.name for row in report.rows if not row.passed} == failing, str(report)
    if not failing:
        assert_gradients_match(report)
