"""Mutation tests: the gradient checker must catch the classic backward bugs.

Each test plants one bug in the backward (by monkeypatching the op a module calls), runs the
checker on an input where the correct backward passes (the unmutated run is checked too), and
asserts that exactly the affected rows fail.
"""

import numpy as np
import pytest

import npcbam
import npcbam.nn.channel_attention as channel_module
import npcbam.nn.spatial_attention as spatial_module
import npcbam.ops.mlp as mlp_module
from npcbam.selfcheck import with_live_relus


def make_case(channels=4, reduction=2, kernel=3, seed=11):
    """A CBAM and a tie-free input on which every ReLU of both MLP branches is active (a dead
    max branch would hide a dropped branch); the assertion keeps the test from losing its point.
    """
    rng = np.random.default_rng(seed)
    module = npcbam.CBAM(channels, reduction, kernel, seed=rng)
    x = with_live_relus(module, rng, (2, channels, 3, 4))
    module.forward(x)
    relu_masks = [v for k, v in module.winners().items() if "relu" in k]
    assert len(relu_masks) == 2 and all(mask.all() for mask in relu_masks)
    return module, x


def failing_rows(module, x) -> set[str]:
    report = npcbam.check_gradients(module, x)
    assert report.kinks == 0, str(report)
    return {row.name for row in report.rows if not row.passed}


@pytest.mark.parametrize("reduction", [1, 2])
def test_unmutated_backward_passes(reduction):
    """The baseline of every mutation below: the correct backward passes on these inputs."""
    module, x = make_case(reduction=reduction)
    assert failing_rows(module, x) == set()


def test_backward_scaled_by_1_01_fails(monkeypatch):
    """dL/dx off by 1 %: the input row fails, the parameter rows (unaffected) still pass."""
    module, x = make_case()
    original = npcbam.CBAM._backward
    monkeypatch.setattr(npcbam.CBAM, "_backward", lambda self, d: 1.01 * original(self, d))
    assert failing_rows(module, x) == {"input"}


def test_weight_gradient_scaled_by_1_01_fails(monkeypatch):
    """The conv weight gradient off by 1 %: only the conv.weight row fails."""
    module, x = make_case()
    original = spatial_module.conv2d_backward

    def scaled(dout, cache):
        dx, dweight, dbias = original(dout, cache)
        return dx, 1.01 * dweight, dbias

    monkeypatch.setattr(spatial_module, "conv2d_backward", scaled)
    assert failing_rows(module, x) == {"conv.weight"}


def test_transposed_mlp_weight_gradient_fails(monkeypatch):
    """dW returned transposed (shapes agree when C/r = C, i.e. reduction 1): both MLP weight
    rows fail while the input row, which does not use dW, passes."""
    module, x = make_case(reduction=1)
    original = mlp_module.linear_backward

    def transposed(dout, cache):
        dx, dweight, dbias = original(dout, cache)
        return dx, dweight.T, dbias

    monkeypatch.setattr(mlp_module, "linear_backward", transposed)
    assert failing_rows(module, x) == {"mlp.0.weight", "mlp.2.weight"}


def test_transposed_conv_kernel_gradient_fails(monkeypatch):
    """The k x k conv weight gradient with its spatial axes swapped fails."""
    module, x = make_case()
    original = spatial_module.conv2d_backward

    def transposed(dout, cache):
        dx, dweight, dbias = original(dout, cache)
        return dx, dweight.swapaxes(2, 3), dbias

    monkeypatch.setattr(spatial_module, "conv2d_backward", transposed)
    assert failing_rows(module, x) == {"conv.weight"}


def test_dropped_branch_of_shared_mlp_fails(monkeypatch):
    """The shared MLP runs twice (avg and max); keeping only the first use's weight gradient
    (an ``=`` where ``+=`` belongs) makes both weight rows fail. The input gradient, which
    flows through both branches correctly, still passes: only the weights are wrong."""
    module, x = make_case()
    original = channel_module.shared_mlp_backward
    calls = []

    def forgetful(dout, cache):
        dv, dw_hidden, dw_out, db_hidden, db_out = original(dout, cache)
        calls.append(1)
        if len(calls) % 2 == 0:  # the second (max) branch of each backward
            return dv, np.zeros_like(dw_hidden), np.zeros_like(dw_out), db_hidden, db_out
        return dv, dw_hidden, dw_out, db_hidden, db_out

    monkeypatch.setattr(channel_module, "shared_mlp_backward", forgetful)
    assert failing_rows(module, x) == {"mlp.0.weight", "mlp.2.weight"}


def test_dropped_pooling_path_of_input_gradient_fails(monkeypatch):
    """x is used three times in channel attention (gate, avg pool, max pool); dropping the
    max-pool path's contribution to dL/dx fails the input row."""
    module, x = make_case()
    monkeypatch.setattr(channel_module, "global_max_pool_backward", lambda d, c, add_to: add_to)
    assert failing_rows(module, x) == {"input"}


def test_swapped_concat_order_in_backward_fails(monkeypatch):
    """Routing the max-map gradient to the mean path (and vice versa) fails the input row."""
    module, x = make_case()
    original = spatial_module.concat_backward
    monkeypatch.setattr(spatial_module, "concat_backward", lambda d, c: original(d, c)[::-1])
    assert "input" in failing_rows(module, x)
