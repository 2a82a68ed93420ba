"""npcbam's networks against stored PyTorch results; PyTorch is not needed.

The fixtures in ``tests/parity/fixtures/networks`` come from ``tests/parity/torch_networks.py``
(written by ``tests/parity/make_network_fixtures.py``): for ``ConvCBAM`` (seed code 2),
``ResidualBlockCBAM`` and ``ResnetFPN4CBAM``, in train and eval mode, float64 and float32, each
holds the constructor's arguments, the full initial state dict (BatchNorm buffers included),
an input ``x``, an upstream gradient ``dy``, and PyTorch's ``y``, ``dx``, parameter gradients
``grad/<key>`` and buffers after the forward ``after/<key>``.

The error of a tensor is ``max|npcbam - torch| / max|torch|``; the bounds are 1e-10 (float64)
and 1e-4 (float32). One exception: in train mode the bias of each stage convolution of
``ResnetFPN4CBAM`` (``block<i>.0.bias``) feeds BatchNorm, which subtracts the batch mean, so
its gradient is zero in exact arithmetic and both results are rounding noise; its error is
divided by the largest gradient of the same convolution's weight instead. BatchNorm's
``num_batches_tracked`` must match exactly.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

import numpy as np
import pytest
from parity import stored
from parity.stored import entries, load_fixture, run_module

import npcbam

FIXTURE_DIR = Path(__file__).resolve().parent / "parity" / "fixtures" / "networks"
FIXTURES = sorted(FIXTURE_DIR.glob("*.npz"))
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
NETWORKS = ("ConvCBAM", "ResidualBlockCBAM", "ResnetFPN4CBAM")
MODES = ("train", "eval")

# -- the state-dict keys of each network, as the seed's PyTorch code names them -------------
BATCHNORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
CONV_CBAM_KEYS = [
    "conv1.weight",
    "conv1.bias",
    "shared_mlp_cbam_1.weight",
    "shared_mlp_cbam_1.bias",
    "shared_mlp_cbam_2.weight",
    "shared_mlp_cbam_2.bias",
    "conv_cbam.weight",
    "conv_cbam.bias",
]
RESIDUAL_KEYS = [
    "conv1.weight",
    *(f"bn1.{name}" for name in BATCHNORM),
    "conv2.weight",
    *(f"bn2.{name}" for name in BATCHNORM),
    "cbam.mlp.0.weight",
    "cbam.mlp.2.weight",
    "cbam.conv.weight",
]
PROJECTION_KEYS = ["shortcut.0.weight", *(f"shortcut.1.{name}" for name in BATCHNORM)]
# ResnetFPN4CBAM: block<i> = Sequential(conv, BatchNorm2d, residual block(s)), then up1..up4
FPN_BLOCKS = {"block1": 1, "block2": 2, "block3": 2, "block4": 2}
FPN_KEYS = [
    *(
        key
        for stage, blocks in FPN_BLOCKS.items()
        for key in (
            f"{stage}.0.weight",
            f"{stage}.0.bias",
            *(f"{stage}.1.{name}" for name in BATCHNORM),
            *(f"{stage}.{2 + i}.{name}" for i in range(blocks) for name in RESIDUAL_KEYS),
        )
    ),
    *(f"up{i}.{name}" for i in range(1, 5) for name in ("weight", "bias")),
]


def expected_state_keys(network: str, config: dict) -> list[str]:
    """The state-dict keys of a network, in PyTorch's order."""
    if network == "ConvCBAM":
        return CONV_CBAM_KEYS
    if network == "ResidualBlockCBAM":
        identity = config["in_channels"] == config["out_channels"] and config["stride"] == 1
        return RESIDUAL_KEYS if identity else RESIDUAL_KEYS + PROJECTION_KEYS
    if network == "ResnetFPN4CBAM":
        return FPN_KEYS
    raise ValueError(f"unknown network {network!r}")


# -- fixtures ---------------------------------------------------------------------------------
def describe(fixture: dict) -> tuple[str, dict, str]:
    """(network, constructor arguments as Python scalars, mode)."""
    config = {name: value.item() for name, value in entries(fixture, "config").items()}
    return str(fixture["network"]), config, str(fixture["mode"])


def build_npcbam(fixture: dict):
    """The npcbam network of a fixture, holding the fixture's initial state, in its mode."""
    network, config, mode = describe(fixture)
    module = getattr(npcbam, network)(**config)
    module.load_state_dict(entries(fixture, "state"))
    if mode == "train":
        module.train()
    else:
        module.eval()
    return module


def run_npcbam(fixture: dict) -> tuple[object, dict[str, np.ndarray]]:
    """The fixture's network run on its ``x`` and ``dy``: the module and its results."""
    module = build_npcbam(fixture)
    return module, run_module(module, fixture)


def vanishing_gradient_scale(network: str, mode: str, key: str) -> str | None:
    """For ``grad/block<i>.0.bias`` of ResnetFPN4CBAM in train mode (zero in exact arithmetic:
    BatchNorm follows), the key of the gradient whose scale measures its error; else None."""
    for stage in FPN_BLOCKS:
        if network == "ResnetFPN4CBAM" and mode == "train" and key == f"grad/{stage}.0.bias":
            return f"grad/{stage}.0.weight"
    return None


def errors_against(fixture: dict, results: dict) -> dict[str, float]:
    """The error of each of npcbam's ``results`` against the fixture's torch result."""
    network, _, mode = describe(fixture)
    return stored.errors_against(
        fixture, results, lambda key: vanishing_gradient_scale(network, mode, key)
    )


def fixture_ids(paths):
    return [path.stem for path in paths]


# -- the fixtures themselves ------------------------------------------------------------------
def test_fixture_folder_is_not_empty():
    assert FIXTURES, (
        f"no .npz fixtures in {FIXTURE_DIR}; run `python tests/parity/make_network_fixtures.py`"
        " (needs torch) to generate them"
    )


def test_fixtures_cover_every_network_mode_and_dtype():
    covered = set()
    for path in FIXTURES:
        fixture = load_fixture(path)
        network, _, mode = describe(fixture)
        covered.add((network, mode, fixture["x"].dtype.name))
    expected = set(product(NETWORKS, MODES, ("float64", "float32")))
    assert covered == expected, f"missing: {sorted(expected - covered)}"


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_ids(FIXTURES))
def test_fixture_is_consistent(path):
    """Dtypes as documented, buffers unchanged by an eval forward and updated by a train one,
    and the vanishing gradients at rounding level in torch's float64 result."""
    fixture = load_fixture(path)
    network, _, mode = describe(fixture)
    dtype = fixture["x"].dtype
    for name, value in fixture.items():
        if name.endswith("num_batches_tracked"):
            assert value.dtype == np.int64 and value.shape == (), name
        elif name.startswith(("state/", "grad/", "after/")) or name in ("x", "dy", "y", "dx"):
            assert value.dtype == dtype, f"{name} is {value.dtype}, not {dtype}"
    state, after = entries(fixture, "state"), entries(fixture, "after")
    assert set(after) == {key for key in state if key.split(".")[-1] in BATCHNORM[2:]}
    for key, value in after.items():
        if mode == "eval":
            assert np.array_equal(value, state[key]), key
        else:
            assert not np.array_equal(value, state[key]), key
    if dtype == np.float64:
        for key in fixture:
            scale_key = vanishing_gradient_scale(network, mode, key)
            if scale_key is not None:
                assert np.abs(fixture[key]).max() <= 1e-12 * np.abs(fixture[scale_key]).max()


# -- npcbam against them ----------------------------------------------------------------------
@pytest.mark.parametrize("path", FIXTURES, ids=fixture_ids(FIXTURES))
def test_state_dict_keys_and_shapes(path):
    """The fixture's keys are the spec's; npcbam's state dict has the same keys (in PyTorch's
    order) and shapes, and gives back what was loaded."""
    fixture = load_fixture(path)
    network, config, _ = describe(fixture)
    state = entries(fixture, "state")
    assert list(state) == expected_state_keys(network, config)

    ours = getattr(npcbam, network)(**config).state_dict()
    assert list(ours) == list(state)
    assert {key: value.shape for key, value in ours.items()} == {
        key: value.shape for key, value in state.items()
    }
    loaded = build_npcbam(fixture).state_dict()
    for key, value in state.items():
        assert np.array_equal(loaded[key], value), key
        if key.endswith("num_batches_tracked"):
            assert loaded[key].dtype == np.int64 and loaded[key].shape == (), key


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_ids(FIXTURES))
def test_npcbam_matches_torch_fixture(path):
    fixture = load_fixture(path)
    dtype = fixture["x"].dtype
    tolerance = TOLERANCE[dtype]
    module, results = run_npcbam(fixture)
    assert results["y"].dtype == dtype and results["dx"].dtype == dtype

    params = set(entries(fixture, "grad"))
    buffers = set(entries(fixture, "after"))
    assert set(module.grads) == params, "gradients for exactly the parameters"
    assert not set(module.grads) & buffers, "buffers get no gradient"
    assert set(module.buffers()) == buffers
    expected_keys = {"y", "dx"} | {f"grad/{k}" for k in params} | {f"after/{k}" for k in buffers}
    assert set(results) == expected_keys

    errors = errors_against(fixture, results)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance, (
        f"{path.name} (torch {fixture['torch_version']}): error of {worst} is "
        f"{errors[worst]:.3g} > {tolerance:g}; worst five: "
        f"{sorted(errors.items(), key=lambda item: -item[1])[:5]}"
    )
