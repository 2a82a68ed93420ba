"""The faster formulations inside the poolings and the module checks give exactly what the
plain NumPy calls give: the channel maximum by halving, the winners' gradient through a flat
index (also into a non-contiguous ``add_to``), and the sum-of-squares summary of a finite check."""

import numpy as np
import pytest

from npcbam._checks import finite_summary, require_finite
from npcbam.ops import (
    channel_max_pool_backward,
    channel_max_pool_forward,
    global_max_pool_backward,
    global_max_pool_forward,
)
from npcbam.ops.pooling import max_over_channels


@pytest.mark.parametrize("channels", [1, 2, 3, 5, 7, 8, 9, 64, 67])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.uint16])
def test_max_over_channels_is_the_plain_maximum(channels, dtype):
    """Every channel count (odd ones fold a channel at some level) and every dtype used (the
    uint8 scores of the first winner included): the same array as ``a.max(axis=1)``."""
    rng = np.random.default_rng(channels)
    a = (rng.standard_normal((2, channels, 3, 4)) * 50).astype(dtype)
    expected = a.max(axis=1, keepdims=True)
    result = max_over_channels(a)
    assert result.dtype == a.dtype and result.shape == expected.shape
    np.testing.assert_array_equal(result, expected)
    assert not np.shares_memory(result, a)


def test_max_over_channels_propagates_nan_and_inf():
    a = np.zeros((1, 5, 2, 2))
    a[0, 4, 0, 0] = np.nan  # the odd channel, folded in
    a[0, 1, 1, 1] = np.inf
    result = max_over_channels(a)
    assert np.isnan(result[0, 0, 0, 0]) and result[0, 0, 1, 1] == np.inf


@pytest.mark.parametrize("channels", [3, 255, 256, 300])
@pytest.mark.parametrize("ties", ["first", "split"])
def test_channel_max_winners_are_the_first_maxima_at_every_index_width(channels, ties):
    """The winners' scores are one byte up to 256 channels (written over the mask's bytes
    when the mask is not kept) and two bytes beyond: the first maximal channel either way,
    and with ties="split" the kept mask is every maximum."""
    rng = np.random.default_rng(channels)
    x = rng.integers(0, 3, size=(2, channels, 3, 2)).astype(np.float64)  # many ties
    out, cache = channel_max_pool_forward(x, ties=ties)
    np.testing.assert_array_equal(cache.winners, x.argmax(axis=1)[:, None])
    if ties == "split":
        np.testing.assert_array_equal(cache.tied, x == out)
    else:
        assert cache.tied is None


@pytest.mark.parametrize(
    "forward, backward",
    [
        (channel_max_pool_forward, channel_max_pool_backward),
        (global_max_pool_forward, global_max_pool_backward),
    ],
    ids=["channel", "global"],
)
def test_max_pool_backward_adds_into_a_non_contiguous_add_to(forward, backward):
    """The winners' gradient goes through a flat index; an ``add_to`` that is a transposed
    view (no 1-D view of it exists) still receives it in place, as a fresh ``dx`` does."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3, 4))
    out, cache = forward(x)
    dout = rng.standard_normal(out.shape)
    storage = rng.standard_normal((4, 3, 5, 2))  # (W, H, C, N)
    add_to = storage.transpose(3, 2, 1, 0)  # (N, C, H, W), not C-contiguous
    expected = add_to + backward(dout, cache)
    result = backward(dout, cache, add_to=add_to)
    assert result is add_to
    np.testing.assert_array_equal(add_to, expected)


@pytest.mark.parametrize("shape", [(7,), (2, 3), (2, 3, 4, 5), ()])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finite_summary_is_non_finite_exactly_when_an_entry_is(shape, bad):
    x = np.random.default_rng(1).standard_normal(shape)
    assert np.isfinite(finite_summary(x)).all()
    x = np.array(x)
    x.reshape(-1)[-1] = bad
    assert not np.isfinite(finite_summary(x)).all()
    with pytest.raises(ValueError, match=r"dy holds 1 non-finite value"):
        require_finite(x, "dy", summary=finite_summary(x))


def test_finite_summary_overflow_falls_back_to_the_full_test():
    """Finite entries whose squares overflow: the summary is inf, and the full test passes."""
    x = np.full((2, 4), np.finfo(np.float32).max, dtype=np.float32)
    assert not np.isfinite(finite_summary(x)).all()
    require_finite(x, "dy", summary=finite_summary(x))  # no error: every entry is finite
