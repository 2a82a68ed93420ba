"""``npcbam.OfficialCBAM`` against the official CBAM module in PyTorch, live (skipped when torch
is absent).

The reference is ``tests/parity/torch_official.py``. First, a state dict taken from a
default-initialised PyTorch module (``{k: v.numpy()}``: float32 weights, an int64 counter),
after a few train-mode batches that move its running statistics, loads into npcbam and gives
the same output, input gradient and buffers, in train and in eval mode. Then hypothesis draws
configurations (any pool-type subset, with or without the spatial gate, C, r, N, H, W, mode)
with a random state in float64: ``y``, ``dx``, every parameter gradient and every buffer after
the forward must be within 1e-10 of PyTorch's (``max|npcbam - torch| / max|torch|``), and
``num_batches_tracked`` equal. Draws within 1e-8 of a kink are set aside, and train-mode draws
with the spatial gate keep at least three values for its BatchNorm.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import relative_error
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import npcbam

torch = pytest.importorskip("torch")

from parity.torch_official import (  # noqa: E402 (needs torch)
    CBAM,
    MODES,
    POOL_TYPES,
    kink_margin,
    official_errors,
    random_state,
    torch_official_results,
)

TOLERANCE = 1e-10  # float64
MIN_KINK_MARGIN = 1e-8
MIN_BATCHNORM_VALUES = 3  # values over (N, H, W) in train mode

CONFIGS = [
    {"gate_channels": 16, "reduction_ratio": 4, "pool_types": ("avg", "max"), "no_spatial": False},
    {"gate_channels": 12, "reduction_ratio": 3, "pool_types": POOL_TYPES, "no_spatial": False},
    {"gate_channels": 8, "reduction_ratio": 2, "pool_types": ("lse",), "no_spatial": False},
    {"gate_channels": 10, "reduction_ratio": 2, "pool_types": ("lp", "max"), "no_spatial": True},
]


def set_mode(module, mode: str):
    return module.train() if mode == "train" else module.eval()


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


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "config",
    CONFIGS,
    ids=[f"{'+'.join(c['pool_types'])}{'-no_spatial' if c['no_spatial'] else ''}" for c in CONFIGS],
)
def test_torch_state_dict_loads_into_npcbam(config, mode):
    """A default-initialised official module's state dict, ``{k: v.numpy()}``, after three
    train-mode batches: npcbam takes the same keys in the same order, holds the same values,
    and gives the same output, input gradient and buffers as the module (in float64)."""
    torch.manual_seed(0)
    reference = CBAM(**config)  # float32, PyTorch's initialisation
    shape = (2, config["gate_channels"], 5, 7)
    with torch.no_grad():
        for _ in range(3):
            reference.train()(torch.randn(shape))
    state = {key: value.numpy() for key, value in reference.state_dict().items()}

    module = npcbam.OfficialCBAM(**config)
    module.load_state_dict(state)
    ours = module.state_dict()
    assert list(ours) == list(state)
    for key, value in state.items():
        assert np.array_equal(ours[key], value), key

    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    reference = set_mode(reference.double(), mode)
    x_t = torch.from_numpy(x).requires_grad_()
    y_t = reference(x_t)
    y_t.backward(torch.from_numpy(dy))
    results = npcbam_results(set_mode(module, mode), x, dy)
    assert relative_error(results["y"], y_t.detach().numpy()) <= TOLERANCE
    assert relative_error(results["dx"], x_t.grad.numpy()) <= TOLERANCE
    for key, value in reference.state_dict().items():
        if key.endswith("num_batches_tracked"):
            assert int(module.state_dict()[key]) == int(value), key
        elif key.split(".")[-1] in ("running_mean", "running_var"):
            assert relative_error(module.state_dict()[key], value.numpy()) <= TOLERANCE, key


@st.composite
def official_cases(draw):
    """Any pool-type subset, with or without the spatial gate, C 1..16 with r <= C, N 1..3,
    H and W 1..7, train or eval."""
    channels = draw(st.integers(1, 16))
    config = {
        "gate_channels": channels,
        "reduction_ratio": draw(st.integers(1, channels)),
        "pool_types": tuple(
            draw(st.lists(st.sampled_from(POOL_TYPES), min_size=1, max_size=4, unique=True))
        ),
        "no_spatial": draw(st.booleans()),
    }
    shape = (draw(st.integers(1, 3)), channels, draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    mode = draw(st.sampled_from(MODES))
    if mode == "train" and not config["no_spatial"]:
        n, _, h, w = shape
        assume(n * h * w >= MIN_BATCHNORM_VALUES)
    return config, shape, mode, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=10)
@given(case=official_cases())
def test_npcbam_matches_torch_on_random_configurations(case):
    config, shape, mode, seed = case
    description = f"OfficialCBAM({config}), x {shape}, {mode}, seed={seed}"
    rng = np.random.default_rng(seed)
    state = random_state(CBAM(**config), rng)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    assume(kink_margin(config, state, x) > MIN_KINK_MARGIN)

    expected = torch_official_results(config, mode, state, x, dy, torch.float64)
    module = npcbam.OfficialCBAM(**config)
    module.load_state_dict(state)
    results = npcbam_results(set_mode(module, mode), x, dy)
    errors = official_errors(results, expected)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, (
        f"{description}: error of {worst} is {errors[worst]:.3g} > {TOLERANCE:g}; worst five: "
        f"{sorted(errors.items(), key=lambda item: -item[1])[:5]}"
    )
