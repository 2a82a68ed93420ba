"""batchnorm2d: agreement with the loop oracles (the backward against an explicitly built
Jacobian), finite-difference gradients with batch statistics (training) and with fixed ones
(evaluation), the batch statistics themselves, and dtype preservation."""

import numpy as np
import pytest
from helpers import EXACT, assert_gradients_match, seeds
from hypothesis import assume, example, given
from hypothesis import strategies as st

from npcbam import check_op_gradients
from npcbam.ops.norm import batch_statistics, batchnorm2d_backward, batchnorm2d_forward
from npcbam.ops.reference import (
    batch_statistics_naive,
    batchnorm2d_backward_naive,
    batchnorm2d_naive,
)

EPS = 1e-5
MIN_VAR = 0.05  # keeps 1/sqrt(var + eps) moderate, so differences of order 4 stay accurate

# (N, C, H, W) with at least two values per channel (training mode needs them)
shapes = st.tuples(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)
).filter(lambda s: s[0] * s[2] * s[3] >= 2)


def draw_bn(rng, shape):
    """x, gamma, beta, and running statistics (mean normal, variance in [0.5, 2])."""
    c = shape[1]
    x = rng.standard_normal(shape)
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    running_mean, running_var = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    return x, gamma, beta, running_mean, running_var


def forward_with(batch_stats, running_mean, running_var):
    """The forward as a function of (x, gamma, beta): the batch's statistics are recomputed
    from x (so finite differences move them too), or the running ones are held fixed."""

    def forward(x, gamma, beta):
        if batch_stats:
            mean, var = batch_statistics(x)
        else:
            mean, var = running_mean, running_var
        return batchnorm2d_forward(x, gamma, beta, mean, var, EPS, batch_stats)

    return forward


@pytest.mark.parametrize("batch_stats", [True, False], ids=["train", "eval"])
@given(shape=shapes, seed=seeds)
@example(shape=(2, 1, 1, 1), seed=0)  # M = 2, the fewest values training allows
@example(shape=(1, 3, 2, 3), seed=1)  # N = 1, H != W
def test_batchnorm2d_gradient_matches_finite_differences(batch_stats, shape, seed):
    """dx, dgamma, dbeta are the derivatives of the normalisation, including (training) the
    paths through the batch mean and variance."""
    x, gamma, beta, running_mean, running_var = draw_bn(np.random.default_rng(seed), shape)
    assume(batch_statistics(x)[1].min() >= MIN_VAR)
    report = check_op_gradients(
        forward_with(batch_stats, running_mean, running_var),
        batchnorm2d_backward,
        {"x": x, "gamma": gamma, "beta": beta},
        title=f"batchnorm2d ({'batch' if batch_stats else 'running'} statistics)",
        seed=seed,
    )
    assert_gradients_match(report)


@pytest.mark.parametrize("batch_stats", [True, False], ids=["train", "eval"])
@given(shape=shapes, seed=seeds)
@example(shape=(2, 1, 1, 1), seed=0)
def test_batchnorm2d_matches_loop_oracle(batch_stats, shape, seed):
    """Forward and backward equal the element-by-element oracle; the oracle's backward sums
    the explicit per-channel Jacobian, a different route from the closed form."""
    rng = np.random.default_rng(seed)
    x, gamma, beta, running_mean, running_var = draw_bn(rng, shape)
    assume(batch_statistics(x)[1].min() >= MIN_VAR)
    out, cache = forward_with(batch_stats, running_mean, running_var)(x, gamma, beta)
    stats = {} if batch_stats else {"running_mean": running_mean, "running_var": running_var}
    np.testing.assert_allclose(out, batchnorm2d_naive(x, gamma, beta, EPS, **stats), **EXACT)
    dout = rng.standard_normal(shape)
    grads = batchnorm2d_backward(dout, cache)
    expected = batchnorm2d_backward_naive(dout, x, gamma, EPS, **stats)
    for grad, reference in zip(grads, expected):
        np.testing.assert_allclose(grad, reference, **EXACT)


@given(shape=shapes, seed=seeds)
def test_batch_statistics_are_mean_and_biased_variance(shape, seed):
    """Per-channel mean and variance divided by M = N*H*W (not M - 1), as the loops compute."""
    x = np.random.default_rng(seed).standard_normal(shape)
    mean, var = batch_statistics(x)
    expected_mean, expected_var = batch_statistics_naive(x)
    np.testing.assert_allclose(mean, expected_mean, **EXACT)
    np.testing.assert_allclose(var, expected_var, **EXACT)
    np.testing.assert_allclose(var, x.var(axis=(0, 2, 3), ddof=0), **EXACT)


@given(shape=shapes, seed=seeds)
def test_training_output_is_normalised(shape, seed):
    """With gamma = 1 and beta = 0, each channel of the output has mean 0 and (biased)
    variance var / (var + eps), just under 1."""
    x = np.random.default_rng(seed).standard_normal(shape)
    c = shape[1]
    mean, var = batch_statistics(x)
    out, _ = batchnorm2d_forward(x, np.ones(c), np.zeros(c), mean, var, EPS, True)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), var / (var + EPS), rtol=1e-12)


def test_training_input_gradient_sums_to_zero_per_channel():
    """Shifting a whole channel by a constant leaves the training-mode output unchanged, so
    the input gradient of each channel sums to zero (the mean term's doing)."""
    rng = np.random.default_rng(3)
    x, gamma, beta, _, _ = draw_bn(rng, (2, 3, 2, 2))
    out, cache = forward_with(True, None, None)(x, gamma, beta)
    dx, _, _ = batchnorm2d_backward(rng.standard_normal(out.shape), cache)
    np.testing.assert_allclose(dx.sum(axis=(0, 2, 3)), 0.0, atol=1e-12)


@pytest.mark.parametrize("batch_stats", [True, False], ids=["train", "eval"])
def test_batchnorm2d_keeps_float32(batch_stats):
    """float32 in, float32 out: the forward and all three gradients."""
    x, gamma, beta, running_mean, running_var = (
        a.astype(np.float32) for a in draw_bn(np.random.default_rng(0), (2, 3, 2, 2))
    )
    out, cache = forward_with(batch_stats, running_mean, running_var)(x, gamma, beta)
    grads = batchnorm2d_backward(np.ones_like(out), cache)
    assert out.dtype == np.float32
    assert [g.dtype for g in grads] == [np.float32] * 3
