"""The conditioning screen of the parity tests (``tests/parity/conditioning.py``) measures what it
says: how far exact results move when their inputs are rounded, large for a sum that cancels
and about one rounding for one that does not."""

import numpy as np
from parity.conditioning import UNIT_ROUNDOFF, rounded, sensitivity


def test_rounded_moves_floats_by_at_most_the_unit_and_leaves_integers():
    rng = np.random.default_rng(0)
    value = rng.standard_normal(1000)
    moved = rounded(value, 1e-3, rng)
    change = np.abs(moved / value - 1)
    assert change.max() <= 1e-3 and change.max() > 5e-4  # uses the whole range
    counter = np.array(7, dtype=np.int64)
    assert rounded(counter, 1e-3, rng) is counter


def dot_product(a, b):
    """results_of for sensitivity: the sum of a * b, with the inputs rounded if asked."""

    def results_of(rounding):
        x, y = (a, b) if rounding is None else (rounded(a, *rounding), rounded(b, *rounding))
        return {"sum": np.array([np.dot(x, y)])}

    return results_of


def test_a_cancelling_sum_is_flagged_and_a_positive_one_is_not():
    unit = UNIT_ROUNDOFF[np.dtype(np.float32)]
    rng = np.random.default_rng(1)
    a = rng.uniform(1, 2, 200)
    positive = sensitivity(dot_product(a, a), unit)["sum"]
    b = rng.standard_normal(200)
    b -= a * (a @ b) / (a @ a) - 1e-3 * a / (a @ a)  # a @ b = 1e-3, terms of size 1
    cancelling = sensitivity(dot_product(a, b), unit)["sum"]
    # |sum of a*b| / sum of |a*b| is about 1 for the first, about 1e5 for the second
    assert positive < 2 * unit
    assert cancelling > 1e3 * unit
