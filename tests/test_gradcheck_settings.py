"""The gradient checker refuses settings that would make it pass anything or fail internally,
and at its defaults it fails a backward that is twice the true gradient."""

import math

import numpy as np
import pytest

from npcbam.gradcheck import check_op_gradients
from npcbam.ops.linear import linear_backward, linear_forward


def _inputs():
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((3, 4)), "w": rng.standard_normal((2, 4))}


def _twice_wrong_backward(dout, cache):
    dx, dweight, _ = linear_backward(dout, cache)
    return 2.0 * dx, 2.0 * dweight


def _check(backward=_twice_wrong_backward, **settings):
    return check_op_gradients(lambda x, w: linear_forward(x, w), backward, _inputs(), **settings)


def test_twice_wrong_backward_fails_at_the_defaults():
    report = _check()
    assert not report.passed
    assert not report["x"].passed and not report["w"].passed


@pytest.mark.parametrize("mode", ["full", "sample", "random"])
def test_twice_wrong_backward_fails_in_every_mode(mode):
    assert not _check(mode=mode).passed


def test_correct_backward_passes_at_the_defaults():
    assert _check(backward=lambda d, c: linear_backward(d, c)[:2]).passed


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rtol": math.inf}, r"rtol=inf; expected a finite rtol with 0 < rtol < 1"),
        ({"rtol": 1.0}, r"rtol=1.0; expected a finite rtol with 0 < rtol < 1"),
        ({"rtol": math.nan}, r"rtol=nan"),
        ({"rtol": -1e-6}, r"rtol=-1e-06"),
        ({"rtol": 0.0}, r"rtol=0.0"),
        ({"atol": math.inf}, r"atol=inf; expected a finite atol >= 0"),
        ({"atol": math.nan}, r"atol=nan; expected a finite atol >= 0"),
        ({"atol": -1.0}, r"atol=-1.0; expected a finite atol >= 0"),
        ({"h": math.inf}, r"h=inf; expected a finite step h > 0"),
        ({"h": math.nan}, r"h=nan; expected a finite step h > 0"),
        ({"h": -1e-4}, r"h=-0.0001; expected a finite step h > 0"),
        ({"h": 0.0}, r"h=0.0; expected a finite step h > 0"),
        ({"n_directions": 0, "mode": "random"}, r"n_directions must be >= 1, got 0"),
        ({"n_samples": 0, "mode": "sample"}, r"n_samples must be >= 1, got 0"),
        ({"n_samples": -3}, r"n_samples must be >= 1, got -3"),
        ({"max_full": -1}, r"max_full must be >= 0, got -1"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_bad_settings_are_refused_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        _check(**settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rtol": "1e-6"}, r"rtol='1e-6' \(str\); expected a finite rtol"),
        ({"h": None}, r"h=None \(NoneType\); expected a finite step h > 0"),
        ({"atol": True}, r"atol=True \(bool\)"),
        ({"n_directions": 2.0}, r"n_directions must be an integer, got 2.0"),
        ({"n_samples": True}, r"n_samples must be an integer, got True"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_settings_of_the_wrong_type_are_refused_by_name(settings, message):
    with pytest.raises(TypeError, match=message):
        _check(**settings)
