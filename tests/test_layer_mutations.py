"""Mutation tests for the layers: plant one classic backward bug, and the gradient checker
must fail exactly the rows it corrupts, on inputs where the correct backward passes (each
baseline is checked too).

Bugs: BatchNorm's training backward without the term through the batch mean, or without the
one through the batch variance; a transposed ConvTranspose2d weight gradient; and the residual
block's shortcut gradient not added to the input gradient (``x`` is used twice).
"""

import numpy as np
import pytest

import npcbam
import npcbam.nn.batchnorm as batchnorm_module
import npcbam.nn.conv as conv_module
from npcbam.gradcheck import distinct_values
from npcbam.nn.residual import ResidualBlockCBAM


def failing_rows(module, x, **settings) -> set[str]:
    """Names of the rows that fail; the input has no kinks, so every entry is compared."""
    report = npcbam.check_gradients(module, x, **settings)
    assert report.kinks == 0, str(report)
    return {row.name for row in report.rows if not row.passed}


# -- BatchNorm2d ----------------------------------------------------------------------------------


def batchnorm_case(training=True):
    """A BatchNorm2d with random gamma and beta, and an input whose channels have different
    means (so that a missing mean term shows) and variances."""
    rng = np.random.default_rng(21)
    layer = npcbam.BatchNorm2d(3).train(training)
    layer.parameters()["weight"][...] = rng.uniform(0.5, 2.0, 3) * rng.choice([-1, 1], 3)
    layer.parameters()["bias"][...] = rng.standard_normal(3)
    shift = np.array([1.0, -2.0, 0.5])[:, None, None]
    scale = np.array([0.5, 1.0, 2.0])[:, None, None]
    return layer, rng.standard_normal((2, 3, 2, 3)) * scale + shift


def batchnorm_backward_with(mean_term: bool, variance_term: bool):
    """The closed-form BatchNorm backward, written out here with a switch per term:

    dx = (g - [mean term] mean(g) - [variance term] x_hat mean(g x_hat)) / std,  g = gamma dy

    (the means over N, H, W of each channel); both terms exist only with batch statistics."""

    def backward(dout, cache):
        axes = (0, 2, 3)
        dbeta = dout.sum(axis=axes)
        dgamma = (dout * cache.x_hat).sum(axis=axes)
        g = dout * cache.gamma[:, None, None]
        dx_hat = g
        if cache.batch_statistics and mean_term:
            dx_hat = dx_hat - g.mean(axis=axes)[:, None, None]
        if cache.batch_statistics and variance_term:
            dx_hat = dx_hat - cache.x_hat * (g * cache.x_hat).mean(axis=axes)[:, None, None]
        return dx_hat * cache.inv_std[:, None, None], dgamma, dbeta

    return backward


backward_complete = batchnorm_backward_with(mean_term=True, variance_term=True)
backward_without_mean_term = batchnorm_backward_with(mean_term=False, variance_term=True)
backward_without_variance_term = batchnorm_backward_with(mean_term=True, variance_term=False)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_baseline_passes(monkeypatch, training):
    """The library's backward passes, and so does the test's own complete formula (the
    mutants below differ from it by one term each)."""
    layer, x = batchnorm_case(training)
    assert failing_rows(layer, x) == set()
    monkeypatch.setattr(batchnorm_module, "batchnorm2d_backward", backward_complete)
    assert failing_rows(layer, x) == set()


@pytest.mark.parametrize(
    "mutant",
    [backward_without_mean_term, backward_without_variance_term],
    ids=["no_mean_term", "no_variance_term"],
)
def test_batchnorm_backward_missing_a_term_fails_the_input_row(monkeypatch, mutant):
    """Training mode: dropping either path through the batch statistics makes dL/dx wrong
    (the input row fails); dgamma and dbeta do not depend on it and still pass."""
    layer, x = batchnorm_case(training=True)
    monkeypatch.setattr(batchnorm_module, "batchnorm2d_backward", mutant)
    assert failing_rows(layer, x) == {"input"}


@pytest.mark.parametrize(
    "mutant",
    [backward_without_mean_term, backward_without_variance_term],
    ids=["no_mean_term", "no_variance_term"],
)
def test_batchnorm_mutants_are_harmless_in_eval_mode(monkeypatch, mutant):
    """Control: with running statistics the two terms do not exist, so the mutants (which
    only touch the batch-statistics branch) pass; the failures above are those terms."""
    layer, x = batchnorm_case(training=False)
    monkeypatch.setattr(batchnorm_module, "batchnorm2d_backward", mutant)
    assert failing_rows(layer, x) == set()


def test_batchnorm_mutant_inside_a_network_also_fails_upstream_weights(monkeypatch):
    """Conv2d -> BatchNorm2d: the wrong dL/d(conv output) also corrupts the conv's weight
    gradient, and the checker says so (the conv bias, whose gradient through BatchNorm is
    exactly zero in training mode, cancels either way)."""
    rng = np.random.default_rng(22)
    model = npcbam.Sequential(npcbam.Conv2d(2, 3, 3, padding=1, seed=rng), npcbam.BatchNorm2d(3))
    x = rng.standard_normal((2, 2, 3, 3))
    assert failing_rows(model, x) == set()
    monkeypatch.setattr(batchnorm_module, "batchnorm2d_backward", backward_without_variance_term)
    assert failing_rows(model, x) == {"input", "0.weight"}


# -- ConvTranspose2d ---------------------------------------------------------------------------


@pytest.mark.parametrize(("stride", "padding", "output_padding"), [(1, 1, 0), (2, 1, 1)])
def test_transposed_conv_transpose_weight_gradient_fails(
    monkeypatch, stride, padding, output_padding
):
    """dW with its (square) kernel axes swapped: only the weight row fails."""
    rng = np.random.default_rng(23)
    layer = npcbam.ConvTranspose2d(2, 3, 3, stride, padding, output_padding, seed=rng)
    x = rng.standard_normal((2, 2, 3, 4))
    assert failing_rows(layer, x) == set()
    original = conv_module.conv_transpose2d_backward

    def transposed(dout, cache):
        dx, dweight, dbias = original(dout, cache)
        return dx, dweight.swapaxes(2, 3), dbias

    monkeypatch.setattr(conv_module, "conv_transpose2d_backward", transposed)
    assert failing_rows(layer, x) == {"weight"}


def test_conv_transpose_weight_gradient_with_in_out_swapped_fails(monkeypatch):
    """With C_in == C_out the (C_in, C_out) axes of dW can be swapped without a shape error
    (a conv2d-layout habit): the weight row fails."""
    rng = np.random.default_rng(24)
    layer = npcbam.ConvTranspose2d(3, 3, 2, 2, seed=rng)
    x = rng.standard_normal((1, 3, 3, 2))
    original = conv_module.conv_transpose2d_backward

    def swapped(dout, cache):
        dx, dweight, dbias = original(dout, cache)
        return dx, dweight.swapaxes(0, 1), dbias

    monkeypatch.setattr(conv_module, "conv_transpose2d_backward", swapped)
    assert failing_rows(layer, x) == {"weight"}


# -- ResidualBlockCBAM -----------------------------------------------------------------------------


def backward_without_shortcut(self, dout):
    """ResidualBlockCBAM._backward with the shortcut's ``dx +=`` line dropped: the gradient
    reaches x through the residual branch only."""
    dsum = self.relu_out.backward(dout)
    dbranch = dsum
    if self.attention is not None:
        dbranch = self.attention.backward(dbranch)
    dbranch = self.bn2.backward(dbranch)
    dbranch = self.conv2.backward(dbranch)
    dbranch = self.relu1.backward(dbranch)
    dbranch = self.bn1.backward(dbranch)
    return self.conv1.backward(dbranch)


def residual_case(in_channels=4, out_channels=4, stride=1, shape=(2, 4, 3, 3), seed=25):
    """A residual block (identity shortcut by default) and a tie-free input; ``failing_rows``
    asserts that no max or ReLU switches within the stencil, and this asserts that the output
    ReLU passes some gradient (a dead one would hide a missing shortcut gradient)."""
    rng = np.random.default_rng(seed)
    block = ResidualBlockCBAM(
        in_channels, out_channels, stride, reduction=2, kernel_size=3, seed=rng
    )
    x = distinct_values(rng, shape)
    block.forward(x)
    assert block.winners()["relu_out.winners"].any()
    return block, x


def test_mutant_is_the_real_backward_minus_the_shortcut_line():
    """Control: the real input gradient minus the mutant's is exactly the identity
    shortcut's term, the gradient at the sum (dL/dy masked by the output ReLU)."""
    block, x = residual_case()
    y = block.forward(x)
    dy = np.random.default_rng(26).standard_normal(y.shape)
    real = block.backward(dy)
    block.forward(x)
    dropped = backward_without_shortcut(block, dy)
    np.testing.assert_allclose(real - dropped, dy * (y > 0), rtol=1e-12, atol=1e-15)


def test_residual_block_baseline_passes():
    block, x = residual_case()
    assert failing_rows(block, x) == set()


def test_residual_block_without_shortcut_gradient_fails_the_input_row(monkeypatch):
    """x is used twice (the residual branch and the identity shortcut); forgetting to add the
    shortcut's gradient fails the input row, and only that row (every entry of every tensor
    compared): the parameters sit on the residual branch, whose gradient is unaffected."""
    block, x = residual_case()
    monkeypatch.setattr(ResidualBlockCBAM, "_backward", backward_without_shortcut)
    assert failing_rows(block, x) == {"input"}


def test_projection_shortcut_dropped_fails_input_and_shortcut_rows(monkeypatch):
    """With a projection shortcut (1x1 conv, stride 2, then BatchNorm) the dropped line also
    skips the shortcut's own backward: its parameter rows fail along with the input's
    (sampled entries, to keep the check short)."""
    block, x = residual_case(2, 4, stride=2, shape=(2, 2, 4, 4), seed=27)
    settings = {"mode": "sample", "n_samples": 6}
    assert failing_rows(block, x, **settings) == set()
    monkeypatch.setattr(ResidualBlockCBAM, "_backward", backward_without_shortcut)
    assert failing_rows(block, x, **settings) == {
        "input",
        "shortcut.0.weight",
        "shortcut.1.weight",
        "shortcut.1.bias",
    }
