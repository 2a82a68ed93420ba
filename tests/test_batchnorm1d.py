"""BatchNorm1d over (N, D) vectors: finite differences in training and evaluation mode (random
weights and running statistics), the same numbers as BatchNorm2d on the (N, D, 1, 1) view, the
running statistics from their definition, state dict, float32, and bad input that leaves the
layer unchanged. PyTorch parity: tests/test_parity_bam.py."""

import numpy as np
import pytest
from helpers import relative_error, seeds
from hypothesis import assume, example, given
from hypothesis import strategies as st

import npcbam
from npcbam.gradcheck import randomize_batchnorms
from npcbam.testing import assert_module_gradients

MODES = ("train", "eval")
# smallest standard deviation of a train-mode batch in a finite-difference test: over a few
# nearly equal values BatchNorm is smooth but steep (its k-th derivative grows like 1/std^k)
MIN_BATCH_STD = 0.05


def layer_and_input(seed: int, n: int, d: int, mode: str):
    rng = np.random.default_rng((seed, 1))
    layer = randomize_batchnorms(npcbam.BatchNorm1d(d), rng).train(mode == "train")
    return layer, rng.standard_normal((n, d))


@given(n=st.integers(2, 5), d=st.integers(1, 4), mode=st.sampled_from(MODES), seed=seeds)
@example(n=2, d=1, mode="train", seed=0)  # the smallest batch training accepts
@example(n=1, d=3, mode="eval", seed=1)  # one vector: evaluation only
def test_batchnorm1d_gradients(n, d, mode, seed):
    layer, x = layer_and_input(seed, n, d, mode)
    if mode == "train":
        assume(x.std(axis=0).min() >= MIN_BATCH_STD)
    report = assert_module_gradients(layer, x, seed=seed)
    assert [row.name for row in report.rows] == ["input", "weight", "bias"]


@pytest.mark.parametrize("mode", MODES)
def test_batchnorm1d_is_batchnorm2d_on_one_pixel_maps(mode):
    """Output, input gradient, parameter gradients and running statistics equal those of a
    BatchNorm2d holding the same state, run on x reshaped to (N, D, 1, 1)."""
    rng = np.random.default_rng(2)
    vectors = randomize_batchnorms(npcbam.BatchNorm1d(3), rng).train(mode == "train")
    maps = npcbam.BatchNorm2d(3).train(mode == "train")
    maps.load_state_dict(vectors.state_dict())
    x, dy = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    y = vectors.forward(x)
    dx = vectors.backward(dy)
    np.testing.assert_array_equal(y, maps.forward(x.reshape(4, 3, 1, 1)).reshape(4, 3))
    np.testing.assert_array_equal(dx, maps.backward(dy.reshape(4, 3, 1, 1)).reshape(4, 3))
    for key, value in vectors.state_dict().items():
        np.testing.assert_array_equal(value, maps.state_dict()[key])
    for key, grad in vectors.grads.items():
        np.testing.assert_array_equal(grad, maps.grads[key])


def test_batchnorm1d_forward_by_hand():
    """Training: (x - mean) / sqrt(biased var + eps) * gamma + beta per column; running mean
    and variance move by momentum towards the batch mean and the *unbiased* variance."""
    rng = np.random.default_rng(3)
    layer = npcbam.BatchNorm1d(2, eps=1e-3, momentum=0.25)
    params = layer.parameters()
    params["weight"][:] = [2.0, -0.5]
    params["bias"][:] = [0.1, 0.3]
    x = rng.standard_normal((5, 2))
    expected = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-3) * [2.0, -0.5] + [0.1, 0.3]
    assert relative_error(layer.forward(x), expected) <= 1e-14
    buffers = layer.buffers()
    np.testing.assert_allclose(buffers["running_mean"], 0.25 * x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(
        buffers["running_var"], 0.75 + 0.25 * x.var(axis=0, ddof=1), rtol=1e-14
    )
    assert buffers["num_batches_tracked"] == 1
    layer.eval()
    running = {k: v.copy() for k, v in buffers.items()}
    expected = (x - running["running_mean"]) / np.sqrt(running["running_var"] + 1e-3)
    assert relative_error(layer.forward(x), expected * [2.0, -0.5] + [0.1, 0.3]) <= 1e-14
    for key, value in layer.buffers().items():
        np.testing.assert_array_equal(value, running[key])


def test_state_dict_is_pytorchs():
    state = npcbam.BatchNorm1d(4).state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert [v.shape for v in state.values()] == [(4,), (4,), (4,), (4,), ()]
    assert state["num_batches_tracked"].dtype == np.int64


def test_float32_in_float32_out():
    layer = npcbam.BatchNorm1d(3)
    x = np.random.default_rng(4).standard_normal((4, 3)).astype(np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32 and layer.backward(np.ones_like(y)).dtype == np.float32
    assert layer.buffers()["running_mean"].dtype == np.float64


def trained_layer():
    rng = np.random.default_rng(5)
    layer = randomize_batchnorms(npcbam.BatchNorm1d(3), rng)
    x = rng.standard_normal((4, 3))
    layer.forward(x)
    layer.backward(rng.standard_normal(x.shape))
    return layer, x, layer.state_dict(), {k: v.copy() for k, v in layer.grads.items()}


@pytest.mark.parametrize(
    ("bad_x", "error", "message"),
    [
        (
            np.zeros((4, 2)),
            ValueError,
            r"x has 2 features \(shape \(4, 2\)\); this layer was built",
        ),
        (np.zeros((4, 3, 1, 1)), ValueError, r"\(4-D\); expected 2-D \(N, D\)"),
        (np.zeros((4, 3), dtype=np.int64), TypeError, r"dtype int64; expected float32"),
        (np.zeros((0, 3)), ValueError, r"every dimension must be at least 1"),
        (np.ones((1, 3)), ValueError, r"more than one value per feature, got x of shape \(1, 3\)"),
    ],
    ids=["features", "4-D", "int", "empty", "one vector in training"],
)
def test_bad_input_leaves_the_layer_unchanged(bad_x, error, message):
    layer, _, state, grads = trained_layer()
    with pytest.raises(error, match=message):
        layer.forward(bad_x)
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    for key, grad in layer.grads.items():
        np.testing.assert_array_equal(grad, grads[key])


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_x_and_dy_are_refused_and_change_nothing(bad_value):
    layer, x, state, grads = trained_layer()
    bad = x.copy()
    bad[2, 1] = bad_value
    with pytest.raises(ValueError, match=r"non-finite"):
        layer.forward(bad)
    layer.forward(x)  # running statistics move here: take the new state as the reference
    state = layer.state_dict()
    dy = np.ones_like(x)
    dy[0, 2] = bad_value
    with pytest.raises(ValueError, match=r"dy holds 1 non-finite value"):
        layer.backward(dy)
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    for key, grad in layer.grads.items():
        np.testing.assert_array_equal(grad, grads[key])


def test_randomize_batchnorms_reaches_batchnorm1d():
    """Both kinds of BatchNorm in one model get random, distinct states."""
    model = npcbam.BAM(8, 2, seed=0)
    randomize_batchnorms(model, np.random.default_rng(6))
    bn1d = model.get_submodule("channel_att.gate_c_bn_1")
    bn2d = model.get_submodule("spatial_att.gate_s_bn_reduce0")
    assert isinstance(bn1d, npcbam.BatchNorm1d) and isinstance(bn2d, npcbam.BatchNorm2d)
    for layer in (bn1d, bn2d):
        state = layer.state_dict()
        assert not np.allclose(state["weight"], 1.0) and not np.allclose(state["bias"], 0.0)
        assert not np.allclose(state["running_var"], 1.0)
