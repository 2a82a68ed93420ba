"""npcbam's networks against PyTorch autograd on random configurations, in float64 (skipped
when torch is absent).

The references are ``tests/parity/torch_networks.py``. Hypothesis draws a configuration of
``ConvCBAM``, ``ResidualBlockCBAM`` or ``ResnetFPN4CBAM``, a mode (train or eval) and a data
seed; the state (weights and BatchNorm running statistics) is random, as in the stored
fixtures. ``y``, ``dx``, every parameter gradient and every buffer after the forward must be
within 1e-10 of PyTorch's (``max|npcbam - torch| / max|torch|``, see
:func:`parity.torch_networks.network_errors`), and ``num_batches_tracked`` equal.

Train mode draws keep at least three values per channel in every BatchNorm: with two, the
normalized output is ±1 whatever the input, and the gradients through it are rounding-level
remainders of ``eps``. Draws within 1e-8 of a kink (a ReLU input or a near-tie of a max) are set
aside: there float64 rounding could pick another winner. A last test loads a state dict
taken from a default-initialised PyTorch module (float32 tensors, as ``state_dict()`` gives
them) into npcbam.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import npcbam

torch = pytest.importorskip("torch")

from parity.torch_networks import (  # noqa: E402 (needs torch)
    MODES,
    build,
    kink_margin,
    network_errors,
    random_state,
    torch_network_results,
)

TOLERANCE = 1e-10  # float64
MIN_KINK_MARGIN = 1e-8
MIN_BATCHNORM_VALUES = 3  # values per channel over (N, H, W) in train mode

modes = st.sampled_from(MODES)
seeds = st.integers(0, 2**32 - 1)
odd_kernels = st.sampled_from([1, 3, 5, 7])


@st.composite
def conv_cbam_cases(draw):
    """ConvCBAM: in 1..5, out 1..8, r with int(out * r) >= 1, N 1..3, H and W 1..7."""
    out_channels = draw(st.integers(1, 8))
    r = draw(st.sampled_from([0.25, 0.5, 0.75, 1.0]).filter(lambda r: int(out_channels * r)))
    config = {"in_channels": draw(st.integers(1, 5)), "out_channels": out_channels, "r": r}
    shape = (
        draw(st.integers(1, 3)),
        config["in_channels"],
        *draw(st.tuples(*[st.integers(1, 7)] * 2)),
    )
    return "ConvCBAM", config, shape, draw(modes), draw(seeds)


@st.composite
def residual_cases(draw):
    """ResidualBlockCBAM: in 1..6, out 1..8, stride 1..2, any reduction <= out, odd k up to 7,
    N 1..3, H and W 1..8; identity and projection shortcuts both occur."""
    out_channels = draw(st.integers(1, 8))
    config = {
        "in_channels": draw(st.integers(1, 6)),
        "out_channels": out_channels,
        "stride": draw(st.integers(1, 2)),
        "reduction": draw(st.integers(1, out_channels)),
        "kernel_size": draw(odd_kernels),
    }
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    mode = draw(modes)
    stride = config["stride"]
    if mode == "train":  # conv1's output is the smallest BatchNorm input
        assume(n * ((h - 1) // stride + 1) * ((w - 1) // stride + 1) >= MIN_BATCHNORM_VALUES)
    return "ResidualBlockCBAM", config, (n, config["in_channels"], h, w), mode, draw(seeds)


@st.composite
def fpn_cases(draw):
    """ResnetFPN4CBAM: c 1..4, reduction <= c, odd k up to 7, N 1..2, H and W in {8, 16}."""
    channels = draw(st.integers(1, 4))
    config = {
        "num_channels": channels,
        "reduction": draw(st.integers(1, channels)),
        "kernel_size": draw(odd_kernels),
    }
    n, h, w = (
        draw(st.integers(1, 2)),
        draw(st.sampled_from([8, 16])),
        draw(st.sampled_from([8, 16])),
    )
    mode = draw(modes)
    if mode == "train":  # block4 sees H/8 × W/8
        assume(n * (h // 8) * (w // 8) >= MIN_BATCHNORM_VALUES)
    return "ResnetFPN4CBAM", config, (n, channels, h, w), mode, draw(seeds)


def npcbam_results(module, x: np.ndarray, dy: np.ndarray) -> dict[str, np.ndarray]:
    """Fresh gradients, one forward and backward; results keyed as the torch helpers key them."""
    module.zero_grad()
    y = module.forward(x)
    dx = module.backward(dy)
    assert y.dtype == x.dtype and dx.dtype == x.dtype
    results = {"y": y, "dx": dx}
    results.update({f"grad/{key}": grad for key, grad in module.grads.items()})
    results.update({f"after/{key}": np.array(value) for key, value in module.buffers().items()})
    return results


def set_mode(module, mode: str):
    if mode == "train":
        module.train()
    else:
        module.eval()
    return module


def assert_matches(case) -> None:
    network, config, shape, mode, seed = case
    description = f"{network}({config}), x {shape}, {mode}, seed={seed}"
    rng = np.random.default_rng(seed)
    state = random_state(build(network, config), rng)
    x = rng.standard_normal(shape)
    assume(kink_margin(network, config, mode, state, x) > MIN_KINK_MARGIN)
    with torch.no_grad():
        y_shape = tuple(build(network, config).eval()(torch.from_numpy(x)).shape)
    dy = rng.standard_normal(y_shape)

    expected = torch_network_results(network, config, mode, state, x, dy, torch.float64)
    module = getattr(npcbam, network)(**config)
    module.load_state_dict(state)
    results = npcbam_results(set_mode(module, mode), x, dy)
    assert set(results) == set(expected), description
    errors = network_errors(network, mode, results, expected)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, (
        f"{description}: error of {worst} is {errors[worst]:.3g} > {TOLERANCE:g}; worst five: "
        f"{sorted(errors.items(), key=lambda item: -item[1])[:5]}"
    )


@given(case=conv_cbam_cases())
def test_conv_cbam_matches_torch(case):
    assert_matches(case)


@given(case=residual_cases())
def test_residual_block_matches_torch(case):
    assert_matches(case)


@given(case=fpn_cases())
def test_resnet_fpn4_matches_torch(case):
    assert_matches(case)


@pytest.mark.parametrize(
    ("network", "config", "shape"),
    [
        ("ConvCBAM", {"in_channels": 3, "out_channels": 4, "r": 0.5}, (2, 3, 5, 6)),
        (
            "ResidualBlockCBAM",
            {"in_channels": 3, "out_channels": 6, "stride": 2, "reduction": 3, "kernel_size": 5},
            (2, 3, 7, 8),
        ),
        ("ResnetFPN4CBAM", {"num_channels": 2, "reduction": 2, "kernel_size": 3}, (2, 2, 8, 16)),
    ],
    ids=["ConvCBAM", "ResidualBlockCBAM", "ResnetFPN4CBAM"],
)
@pytest.mark.parametrize("mode", MODES)
def test_torch_state_dict_loads_into_npcbam(network, config, shape, mode):
    """A state dict from a default-initialised torch module, ``{k: v.numpy()}`` (float32
    weights, int64 counters), after a few train-mode batches (running statistics away from
    their defaults), gives npcbam the same output and buffers as the torch module."""
    torch.manual_seed(0)
    reference = type(build(network, config))(**config)  # float32, PyTorch's initialisation
    with torch.no_grad():
        for _ in range(3):
            reference.train()(torch.randn(shape))
    state = {key: value.numpy() for key, value in reference.state_dict().items()}

    module = getattr(npcbam, network)(**config)
    module.load_state_dict(state)
    ours = module.state_dict()
    assert list(ours) == list(state)
    for key, value in state.items():
        assert np.array_equal(ours[key], value), key

    x = np.random.default_rng(1).standard_normal(shape)
    reference = set_mode(reference.double(), mode)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    y = set_mode(module, mode).forward(x)
    assert np.abs(y - expected).max() <= TOLERANCE * np.abs(expected).max()
    for key, value in reference.state_dict().items():
        if key.endswith("num_batches_tracked"):
            assert module.buffers()[key] == value.item(), key
        elif key in module.buffers():
            buffer = module.buffers()[key]
            assert np.abs(buffer - value.numpy()).max() <= TOLERANCE * np.abs(value.numpy()).max()
