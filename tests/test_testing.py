"""npcbam.testing: the strategies draw what they promise, the margins measure what they say, and
the assertions pass correct backward passes and fail planted bugs with the report's table."""

from __future__ import annotations

import doctest
import subprocess
import sys
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import assume, example, find, given
from hypothesis import strategies as st

import npcbam
import npcbam.testing
from npcbam.gradcheck import distinct_values
from npcbam.ops import (
    global_max_pool_backward,
    global_max_pool_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
    shared_mlp_backward,
    shared_mlp_forward,
)
from npcbam.testing import (
    MAX_REL_ERR,
    SAFE_MARGIN,
    assert_gradients,
    assert_module_gradients,
    channels_and_reduction,
    distinct_arrays,
    feature_map_shapes,
    feature_maps,
    kink_free,
    kink_margin,
    relative_error,
    relu_margin,
    seeds,
    top2_gap,
)

# -- importing ------------------------------------------------------------------------------------


def test_importing_npcbam_and_npcbam_testing_does_not_import_hypothesis():
    """The runtime dependency is numpy alone: hypothesis is imported only by a strategy."""
    code = "import sys, npcbam, npcbam.testing; print('hypothesis' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_strategy_without_hypothesis_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # makes `import hypothesis` fail
    with pytest.raises(ImportError, match=r'pip install "npcbam\[test\]"'):
        feature_maps()
    # the assertions and margins need numpy only
    assert top2_gap(np.array([1.0, 3.0]), 0) == 2.0


def test_the_docstring_examples_run():
    results = doctest.testmod(npcbam.testing, optionflags=doctest.ELLIPSIS)
    assert results.attempted > 20 and results.failed == 0


# -- strategies -----------------------------------------------------------------------------------


def neighbour_gap(x: np.ndarray) -> float:
    return float(np.diff(np.sort(x, axis=None)).min()) if x.size > 1 else np.inf


@given(
    x=distinct_arrays(st.tuples(st.integers(1, 4), st.integers(1, 5)), scale=0.5),
    y=distinct_arrays((3, 2, 2), min_abs=0.25),
)
def test_distinct_arrays_are_distinct_float64_on_a_spaced_grid(x, y):
    assert x.dtype == y.dtype == np.float64 and y.shape == (3, 2, 2)
    assert np.unique(x).size == x.size and np.unique(y).size == y.size
    assert np.abs(x).max() <= 0.5
    if x.size > 1:  # neighbours 2 * scale / (size - 1) apart
        assert neighbour_gap(x) == pytest.approx(1.0 / (x.size - 1))
    assert np.abs(y).min() >= 0.25 and neighbour_gap(y) >= 4.0 / 11 - 1e-12


@given(x=feature_maps(channels=3, min_side=2, max_side=4))
def test_feature_maps_are_distinct_four_dimensional_maps_in_range(x):
    n, c, h, w = x.shape
    assert 1 <= n <= 2 and c == 3 and 2 <= h <= 4 and 2 <= w <= 4
    assert np.unique(x).size == x.size and top2_gap(x, (2, 3)) > 0 and top2_gap(x, 1) > 0


@pytest.mark.parametrize(
    "edge",
    [
        lambda s: s[0] == 1 and s[2] == s[3] == 1,  # N = 1, H = W = 1
        lambda s: s[2] != s[3],  # H != W
        lambda s: s[0] == 2 and s[1] == 4 and s[2] == 5,  # the largest sizes
    ],
    ids=["N=1,H=W=1", "H!=W", "largest"],
)
def test_feature_map_shapes_draw_the_edge_shapes(edge):
    shape = find(feature_map_shapes(), edge)
    assert edge(shape)


@pytest.mark.parametrize(
    "edge",
    [lambda cr: cr[0] == cr[1] > 1, lambda cr: cr[0] % cr[1] != 0, lambda cr: cr[0] // cr[1] == 2],
    ids=["C=r", "r does not divide C", "hidden width 2"],
)
def test_channels_and_reduction_draw_the_edge_widths(edge):
    assert edge(find(channels_and_reduction(), edge))


@given(c_r=channels_and_reduction(max_reduction=3, max_hidden=2))
def test_channels_and_reduction_keep_the_bottleneck_in_range(c_r):
    c, r = c_r
    assert 1 <= r <= 3 and 1 <= c // r <= 2


def test_bad_strategy_arguments_are_refused():
    with pytest.raises(ValueError, match=r"channels=\(0, 2\)"):
        feature_map_shapes(channels=(0, 2))
    with pytest.raises(ValueError, match="scale=-1"):
        distinct_arrays((2,), scale=-1)


# -- margins --------------------------------------------------------------------------------------


def top2_gap_loops(x: np.ndarray, axes: tuple[int, ...]) -> float:
    """Oracle: for every index of the kept axes, the gap between the two largest values."""
    kept = [i for i in range(x.ndim) if i not in axes]
    gaps = []
    for index in np.ndindex(*[x.shape[i] for i in kept]):
        selector = [slice(None)] * x.ndim
        for axis, i in zip(kept, index):
            selector[axis] = i
        values = sorted(x[tuple(selector)].ravel())
        gaps.append(values[-1] - values[-2] if len(values) > 1 else np.inf)
    return min(gaps)


@given(x=feature_maps(), axes=st.sampled_from([(1,), (2, 3), (1, 2, 3), (0, 2)]))
def test_top2_gap_matches_a_loop_oracle(x, axes):
    assert top2_gap(x, axes) == top2_gap_loops(x, axes)


def test_margins_on_hand_made_values():
    x = np.array([[[3.0, 1.0], [2.5, 0.0]], [[-1.0, -4.0], [-1.5, 9.0]]])  # (2, 2, 2)
    assert top2_gap(x, axis=(1, 2)) == 0.5  # 3.0 - 2.5 in the first, 9.0 - (-1.0) the second
    assert top2_gap(x, axis=-1) == 2.0  # rows: 2, 2.5, 3, 10.5
    assert top2_gap(x, axis=np.int64(0)) == 4.0  # pairs along the first axis: 4, 5, 4, 9
    assert top2_gap(x[:, :1, :1], axis=(1, 2)) == np.inf
    assert relu_margin(np.array([[-0.5, 0.125], [3.0, -2.0]])) == 0.125
    assert kink_margin() == np.inf
    assert kink_margin(maxima=[(x, (1, 2))], relus=[np.array([0.25, -1.0])]) == 0.25
    assert kink_free(maxima=[(x, (1, 2))]) and not kink_free(maxima=[(x, (1, 2))], margin=0.6)
    assert not kink_free(relus=[np.array([1.0, SAFE_MARGIN / 2])])


def test_relative_error_is_normwise():
    assert relative_error(np.array([1.0, 2.5]), np.array([1.0, 2.0])) == 0.25
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.ones(3), np.zeros(3)) == np.inf
    with pytest.raises(ValueError, match=r"shapes differ: \(3,\) and \(2,\)"):
        relative_error(np.ones(3), np.ones(2))


# -- correct ops pass -----------------------------------------------------------------------------


def softplus_forward(z):
    return np.logaddexp(0.0, z), z


def softplus_backward(dout, z):
    return dout / (1.0 + np.exp(-z))


class LeakyCache(NamedTuple):
    winners: np.ndarray  # z > 0: the side of the kink, which the checker watches


def leaky_relu_forward(z, slope=0.1):
    positive = z > 0
    return np.where(positive, z, slope * z), LeakyCache(positive)


def leaky_relu_backward(dout, cache, slope=0.1):
    return np.where(cache.winners, dout, slope * dout)


def two_use_mlp_forward(v_avg, v_max, w_hidden, w_out):
    """Channel attention's shared MLP: one pair of weights used on two pooled vectors."""
    out_avg, cache_avg = shared_mlp_forward(v_avg, w_hidden, w_out)  # (N, C)
    out_max, cache_max = shared_mlp_forward(v_max, w_hidden, w_out)  # (N, C)
    return out_avg + out_max, (cache_avg, cache_max)


def two_use_mlp_backward(dout, cache, branches=("avg", "max")):
    """Each use adds its weight gradients; ``branches`` drops one use for the mutation test."""
    cache_avg, cache_max = cache
    dv_avg, dw_hidden, dw_out = shared_mlp_backward(dout, cache_avg)[:3]  # no biases
    dv_max, dw_hidden_max, dw_out_max = shared_mlp_backward(dout, cache_max)[:3]
    if "max" in branches:
        dw_hidden += dw_hidden_max
        dw_out += dw_out_max
    return dv_avg, dv_max, dw_hidden, dw_out


@given(z=distinct_arrays(feature_map_shapes()))
def test_a_user_defined_smooth_op_passes(z):
    report = assert_gradients(softplus_forward, softplus_backward, {"z": z})
    assert report.kinks == 0 and report.max_rel_err <= MAX_REL_ERR


@given(z=feature_maps(min_abs=SAFE_MARGIN))
def test_a_user_defined_op_with_a_kink_passes_on_inputs_away_from_it(z):
    assert_gradients(leaky_relu_forward, leaky_relu_backward, {"z": z})


@given(x=feature_maps(scale=0.5))
@example(x=np.array([[[[0.25]]]]))  # N = C = H = W = 1: a max of one entry
def test_an_npcbam_max_pool_passes(x):
    assume(kink_free(maxima=[(x, (2, 3))]))
    assert_gradients(global_max_pool_forward, global_max_pool_backward, {"x": x})


@given(data=st.data(), c_r=channels_and_reduction(), n=st.integers(1, 3), seed=seeds())
def test_the_shared_mlp_used_twice_passes_away_from_its_relu_kinks(data, c_r, n, seed):
    c, r = c_r
    rng = np.random.default_rng(seed)
    v_avg, v_max = data.draw(distinct_arrays((n, c))), data.draw(distinct_arrays((n, c)))
    w_hidden, w_out = rng.standard_normal((c // r, c)), rng.standard_normal((c, c // r))
    assume(kink_free(relus=[v_avg @ w_hidden.T, v_max @ w_hidden.T]))
    inputs = {"v_avg": v_avg, "v_max": v_max, "w_hidden": w_hidden, "w_out": w_out}
    report = assert_gradients(two_use_mlp_forward, two_use_mlp_backward, inputs, seed=seed)
    assert [row.name for row in report.rows] == list(inputs)


@given(data=st.data(), c_r=channels_and_reduction(), seed=seeds())
def test_an_npcbam_module_passes(data, c_r, seed):
    c, r = c_r
    module = npcbam.ChannelAttention(c, r, seed=seed)
    x = data.draw(feature_maps(channels=c))
    w_hidden = module.parameters()["mlp.0.weight"].reshape(-1, c)  # (C/r, C)
    n = x.shape[0]
    pooled = np.concatenate([x.mean(axis=(2, 3)), x.reshape(n, c, -1).max(axis=2)])  # (2N, C)
    assume(kink_free(maxima=[(x, (2, 3))], relus=[pooled @ w_hidden.T]))
    report = assert_module_gradients(module, x, seed=seed)
    assert [row.name for row in report.rows] == ["input", "mlp.0.weight", "mlp.2.weight"]


# -- planted bugs fail, with the table ------------------------------------------------------------


def assert_fails(check, *failing_rows: str, passing_rows: tuple[str, ...] = ()) -> str:
    """Run ``check``; it must raise AssertionError naming exactly ``failing_rows``, with the
    report's table. Returns the message."""
    with pytest.raises(AssertionError) as raised:
        check()
    message = str(raised.value)
    assert "gradient check of" in message and "max rel err" in message  # reason and table
    for name in failing_rows:
        assert f"\n- {name}: analytic and finite-difference gradients differ" in message
        assert any(line.startswith(name) and "FAIL" in line for line in message.splitlines())
    for name in passing_rows:
        assert f"\n- {name}:" not in message
        assert any(line.startswith(name) and "pass" in line for line in message.splitlines())
    return message


def live_relu_mlp_inputs(c=4, r=2, n=2, seed=5):
    """Positive pooled vectors and a positive first layer: every ReLU of both uses is active,
    so that each use contributes to the weight gradients (a dead use would hide its loss)."""
    rng = np.random.default_rng(seed)
    inputs = {
        "v_avg": 1.5 + distinct_values(rng, (n, c), scale=1.0),
        "v_max": 1.5 + distinct_values(rng, (n, c), scale=1.0),
        "w_hidden": np.abs(rng.standard_normal((c // r, c))) + 0.1,
        "w_out": rng.standard_normal((c, c // r)),
    }
    assert kink_margin(relus=[inputs["v_max"] @ inputs["w_hidden"].T]) > 1.0
    return inputs


def test_a_backward_scaled_by_1_01_fails():
    z = distinct_values(np.random.default_rng(0), (3, 4))
    assert_gradients(softplus_forward, softplus_backward, {"z": z})  # the baseline passes

    def scaled(dout, cache):
        return 1.01 * softplus_backward(dout, cache)

    assert_fails(lambda: assert_gradients(softplus_forward, scaled, {"z": z}), "z")


def test_a_transposed_weight_gradient_fails():
    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal((3, 4)), "w": rng.standard_normal((4, 4))}  # W square

    def forward(x, w):
        return linear_forward(x, w)

    def transposed(dout, cache):
        dx, dw, _ = linear_backward(dout, cache)
        return dx, dw.T

    assert_gradients(forward, lambda d, c: linear_backward(d, c)[:2], inputs)  # baseline
    assert_fails(lambda: assert_gradients(forward, transposed, inputs), "w", passing_rows=("x",))


def test_a_dropped_branch_of_a_weight_used_twice_fails():
    """``=`` where ``+=`` belongs: the max use's weight gradients are lost."""
    inputs = live_relu_mlp_inputs()
    assert_gradients(two_use_mlp_forward, two_use_mlp_backward, inputs)  # baseline

    def dropped(dout, cache):
        return two_use_mlp_backward(dout, cache, branches=("avg",))

    assert_fails(
        lambda: assert_gradients(two_use_mlp_forward, dropped, inputs),
        "w_hidden",
        "w_out",
        passing_rows=("v_avg", "v_max"),
    )


def test_a_module_with_a_scaled_weight_gradient_fails():
    class ScaledConvGradient(npcbam.SpatialAttention):
        def _backward(self, dout):
            before = self.grads["conv.weight"].copy()
            dx = super()._backward(dout)
            self.grads["conv.weight"][:] = before + 1.01 * (self.grads["conv.weight"] - before)
            return dx

    x = distinct_values(np.random.default_rng(2), (2, 3, 4, 5))
    assert_module_gradients(npcbam.SpatialAttention(3, seed=0), x)  # baseline
    check = lambda: assert_module_gradients(ScaledConvGradient(3, seed=0), x)  # noqa: E731
    assert_fails(check, "conv.weight", passing_rows=("input",))


def test_a_crossed_kink_fails_and_says_how_to_avoid_it():
    z = np.array([[-1.0, 0.0, 0.5, 2.0]])  # a ReLU input at its kink
    with pytest.raises(AssertionError) as raised:
        assert_gradients(relu_forward, relu_backward, {"z": z})
    message = str(raised.value)
    assert "1 entry crossed a kink and could not be compared" in message
    assert "assume(kink_free(maxima=..., relus=...))" in message and "kinks" in message
    # the same op away from its kink passes
    assert_gradients(relu_forward, relu_backward, {"z": np.array([[-1.0, 0.3, 0.5, 2.0]])})


def test_an_error_within_rtol_but_above_the_bound_fails():
    """rtol = 0.1 lets a 1 % error pass every entry; the worst-error bound still catches it."""
    z = distinct_values(np.random.default_rng(3), (2, 3))

    def scaled(dout, cache):
        return 1.01 * softplus_backward(dout, cache)

    with pytest.raises(AssertionError, match=r"exceeds max_rel_err = 1e-06") as raised:
        assert_gradients(softplus_forward, scaled, {"z": z}, rtol=0.1)
    assert "PASSED" in str(raised.value)  # every entry within rtol: the table says so


def test_float32_is_refused_with_a_clear_message():
    z = np.ones((2, 2), dtype=np.float32)
    with pytest.raises(TypeError, match=r"z has dtype float32; finite differences need float64"):
        assert_gradients(softplus_forward, softplus_backward, {"z": z})
    module = npcbam.SpatialAttention(3, seed=0)
    with pytest.raises(TypeError, match=r"x has dtype float32.*astype\(np.float64\)"):
        assert_module_gradients(module, np.ones((1, 2, 3, 3), dtype=np.float32))
