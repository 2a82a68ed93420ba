"""How conv2d computes, not what: the column blocks of its products, and the two routes of its
input gradient (the flipped-kernel convolution at stride 1, the fold otherwise). Each is
compared with the loop oracles, so that a route or a block boundary that the other tests'
small cases never reach is still checked."""

import contextlib
import itertools

import numpy as np
import pytest
from helpers import EXACT, seeds
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ops_conv import ConvCase, conv_cases
from test_ops_conv_dilation import dilated_cases

import npcbam.ops.conv as conv_module
from npcbam.ops.conv import (
    column_blocks,
    conv2d_backward,
    conv2d_forward,
    flipped_padding,
    times_transposed,
)
from npcbam.ops.im2col import grid_of
from npcbam.ops.reference import conv2d_backward_naive, conv2d_naive


def assert_matches_oracle(case: ConvCase, seed: int) -> None:
    """conv2d forward and backward (with a bias) equal the loop oracles on ``case``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.x_shape)
    weight = rng.standard_normal(case.weight_shape)
    bias = rng.standard_normal(case.f)
    out, cache = conv2d_forward(x, weight, bias, case.stride, case.padding, case.dilation)
    expected = conv2d_naive(x, weight, bias, case.stride, case.padding, case.dilation)
    np.testing.assert_allclose(out, expected, **EXACT)
    dout = rng.standard_normal(out.shape)
    grads = conv2d_backward(dout, cache)
    expected_grads = conv2d_backward_naive(
        dout, x, weight, case.stride, case.padding, with_bias=True, dilation=case.dilation
    )
    for got, want in zip(grads, expected_grads):
        np.testing.assert_allclose(got, want, **EXACT)


@contextlib.contextmanager
def blocks_of(block_bytes: int, min_columns: int):
    """A context in which conv2d cuts its columns into blocks of ``block_bytes`` bytes and at
    least ``min_columns`` columns."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_module, "BLOCK_BYTES", block_bytes)
        patch.setattr(conv_module, "MIN_BLOCK_COLUMNS", min_columns)
        yield


@settings(max_examples=40)
@given(case=conv_cases(max_channels=3), seed=seeds)
def test_conv2d_in_blocks_of_three_columns_matches_the_oracle(case, seed):
    """Blocks of 3 columns (or fewer, the last): every product and unfold is cut, with runs
    that end past the last image inside a block."""
    with blocks_of(1, 3):
        assert_matches_oracle(case, seed)


@settings(max_examples=20)
@given(case=dilated_cases(), seed=seeds)
def test_dilated_conv2d_in_blocks_of_three_columns_matches_the_oracle(case, seed):
    with blocks_of(1, 3):
        assert_matches_oracle(case, seed)


@given(
    length_parts=st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9)),
    rows=st.integers(1, 300),
    block_bytes=st.integers(1, 2**16),
    min_columns=st.integers(1, 50),
)
def test_column_blocks_cover_the_columns_once_in_order(
    length_parts, rows, block_bytes, min_columns
):
    n, h, w = length_parts
    grid = grid_of((n, 1, h, w), (1, 1), (1, 1), (0, 0))
    with blocks_of(block_bytes, min_columns):
        blocks = column_blocks(grid, rows, 8)
    assert blocks[0][0] == 0 and blocks[-1][1] == grid.length == n * h * w
    assert all(stop == next_start for (_, stop), (next_start, _) in itertools.pairwise(blocks))
    widths = [stop - start for start, stop in blocks]
    assert all(width == widths[0] for width in widths[:-1]) and 0 < widths[-1] <= widths[0]
    assert widths[0] >= min(min_columns, grid.length) or len(blocks) == 1


@pytest.mark.parametrize("rows", [1, 2, 3, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_times_transposed_is_a_times_b_transposed(rows, dtype):
    """Both ways of the weight gradient's product (one matrix-vector product per row of ``a``
    up to two rows, one matrix product above), on a strided ``b`` as the taps are."""
    rng = np.random.default_rng(rows)
    a = rng.standard_normal((rows, 1000)).astype(dtype)
    b = rng.standard_normal((7, 1006)).astype(dtype)[:, 3:1003]  # rows of a longer run
    got = times_transposed(a, b)
    assert got.shape == (rows, 7) and got.dtype == dtype
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    # the classical bound of a dot product's rounding error: K·eps·sum_k |a_k b_k|
    bound = a.shape[1] * np.finfo(dtype).eps * (np.abs(a64) @ np.abs(b64).T)
    assert (np.abs(got - a64 @ b64.T) <= bound).all()


# Each route of the input gradient, on cases chosen to take it (asserted), against the oracle.
# Both take the weight gradient's product row by row where the left factor has at most two rows
# (C <= 2 on the flipped route, F <= 2 on the fold route) and as one product otherwise.
FLIPPED_ROUTE = [
    ConvCase(2, 3, 6, 5, 2, (3, 3), (1, 1), (1, 1)),  # F < C, "same" padding
    ConvCase(1, 2, 7, 8, 2, (3, 5), (1, 1), (0, 2)),  # F = C, rectangular, padding 0 and k-1-p
    ConvCase(2, 2, 9, 9, 1, (7, 7), (1, 1), (3, 3)),  # CBAM's spatial convolution, 2 -> 1
    ConvCase(1, 2, 9, 9, 2, (3, 3), (1, 1), (4, 4), (4, 4)),  # BAM's dilated convolution
]
FOLD_ROUTE = [
    ConvCase(2, 2, 6, 5, 3, (3, 3), (1, 1), (1, 1)),  # F > C (the stem's case)
    ConvCase(1, 3, 7, 6, 2, (3, 3), (2, 2), (1, 1)),  # stride 2
    ConvCase(1, 2, 3, 3, 2, (3, 3), (1, 1), (3, 3)),  # padding beyond k - 1
    ConvCase(2, 2, 5, 4, 1, (1, 1), (2, 1), (0, 0)),  # 1×1, stride 2 along one axis
]


@pytest.mark.parametrize("case", FLIPPED_ROUTE, ids=str)
def test_stride_1_input_gradient_by_the_flipped_kernel_matches_the_oracle(case):
    _, cache = conv2d_forward(np.zeros(case.x_shape), np.zeros(case.weight_shape), None,
                              case.stride, case.padding, case.dilation)  # fmt: skip
    assert flipped_padding(cache) is not None
    assert_matches_oracle(case, seed=0)


@pytest.mark.parametrize("case", FOLD_ROUTE, ids=str)
def test_input_gradient_by_the_fold_matches_the_oracle(case):
    _, cache = conv2d_forward(np.zeros(case.x_shape), np.zeros(case.weight_shape), None,
                              case.stride, case.padding, case.dilation)  # fmt: skip
    assert flipped_padding(cache) is None
    assert_matches_oracle(case, seed=0)


@pytest.mark.parametrize("case", FLIPPED_ROUTE + FOLD_ROUTE, ids=str)
def test_backward_without_the_forward_phases_gives_the_same_gradients(case):
    """A cache made by hand (no phases kept by the forward) takes the path that rebuilds them:
    the same gradients as from the forward's cache."""
    rng = np.random.default_rng(3)
    x, weight = rng.standard_normal(case.x_shape), rng.standard_normal(case.weight_shape)
    out, cache = conv2d_forward(x, weight, None, case.stride, case.padding, case.dilation)
    dout = rng.standard_normal(out.shape)
    by_hand = cache._replace(phases=None)
    for got, want in zip(conv2d_backward(dout, by_hand)[:2], conv2d_backward(dout, cache)[:2]):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
