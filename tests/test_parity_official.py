"""``npcbam.OfficialCBAM`` against stored results of the official CBAM module; PyTorch is not
needed.

The fixtures in ``tests/parity/fixtures/official`` come from ``tests/parity/torch_official.py``
(a PyTorch version of ``MODELS/cbam.py`` of the authors' code, written by
``tests/parity/make_official_fixtures.py``): several configurations (default pool types, all
four, ``("lse",)``, ``("lp", "max")``; with and without the spatial gate), each in train and
eval mode, float64 and float32. Each holds the constructor's arguments, the full initial state
dict (random BatchNorm parameters and running statistics included), an input ``x``, an
upstream gradient ``dy``, and PyTorch's ``y``, ``dx``, parameter gradients ``grad/<key>`` and
buffers after the forward ``after/<key>``.

The error of a tensor is ``max|npcbam - torch| / max|torch|``; the bounds are 1e-10 (float64)
and 1e-4 (float32). ``num_batches_tracked`` must match exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from parity.stored import entries, errors_against, load_fixture, run_module

import npcbam

FIXTURE_DIR = Path(__file__).resolve().parent / "parity" / "fixtures" / "official"
FIXTURES = sorted(FIXTURE_DIR.glob("*.npz"))
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
MODES = ("train", "eval")
POOL_TYPES = ("avg", "max", "lp", "lse")
# the pool-type configurations the fixtures must include, with and without the spatial gate
REQUIRED_POOL_TYPES = {("avg", "max"), ("avg", "max", "lp", "lse"), ("lse",), ("lp", "max")}
MAX_TOTAL_BYTES = 300_000

BATCHNORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
CHANNEL_KEYS = [
    "ChannelGate.mlp.1.weight",
    "ChannelGate.mlp.1.bias",
    "ChannelGate.mlp.3.weight",
    "ChannelGate.mlp.3.bias",
]
SPATIAL_KEYS = [
    "SpatialGate.spatial.conv.weight",
    *(f"SpatialGate.spatial.bn.{name}" for name in BATCHNORM),
]


# -- fixtures -----------------------------------------------------------------------------------
def describe(fixture: dict) -> tuple[dict, str]:
    """(OfficialCBAM's constructor arguments as Python values, mode)."""
    config = entries(fixture, "config")
    arguments = {
        "gate_channels": int(config["gate_channels"]),
        "reduction_ratio": int(config["reduction_ratio"]),
        "pool_types": tuple(str(kind) for kind in config["pool_types"]),
        "no_spatial": bool(config["no_spatial"]),
    }
    return arguments, str(fixture["mode"])


def build_npcbam(fixture: dict) -> npcbam.OfficialCBAM:
    """The npcbam module of a fixture, holding the fixture's initial state, in its mode."""
    config, mode = describe(fixture)
    module = npcbam.OfficialCBAM(**config)
    module.load_state_dict(entries(fixture, "state"))
    return module.train() if mode == "train" else module.eval()


def run_npcbam(fixture: dict) -> tuple[npcbam.OfficialCBAM, dict[str, np.ndarray]]:
    """The fixture's module run on its ``x`` and ``dy``: the module and its results."""
    module = build_npcbam(fixture)
    return module, run_module(module, fixture)


def fixture_ids(paths):
    return [path.stem for path in paths]


# -- the fixtures themselves --------------------------------------------------------------------
def test_fixture_folder_is_not_empty():
    assert FIXTURES, (
        f"no .npz fixtures in {FIXTURE_DIR}; run `python tests/parity/make_official_fixtures.py`"
        " (needs torch) to generate them"
    )


def test_fixtures_cover_the_configurations_modes_and_dtypes():
    """The required pool-type configurations, every pool type, both values of no_spatial, and
    for each configuration both modes and both dtypes."""
    covered, configurations = set(), set()
    for path in FIXTURES:
        fixture = load_fixture(path)
        config, mode = describe(fixture)
        key = (config["pool_types"], config["no_spatial"], config["gate_channels"])
        configurations.add(key)
        covered.add((key, mode, fixture["x"].dtype.name))
    assert {pool_types for pool_types, _, _ in configurations} >= REQUIRED_POOL_TYPES
    assert {kind for pool_types, _, _ in configurations for kind in pool_types} == set(POOL_TYPES)
    assert {no_spatial for _, no_spatial, _ in configurations} == {False, True}
    expected = {
        (key, mode, dtype)
        for key in configurations
        for mode in MODES
        for dtype in ("float64", "float32")
    }
    assert covered == expected, f"missing: {sorted(expected - covered)}"


def test_fixtures_stay_small():
    total = sum(path.stat().st_size for path in FIXTURES)
    assert total <= MAX_TOTAL_BYTES, f"{total} bytes of official fixtures"


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_ids(FIXTURES))
def test_fixture_is_consistent(path):
    """Shapes and dtypes as documented (H != W, both odd), float64 or float32 throughout,
    buffers unchanged by an eval forward and updated (counter incremented) by a train one."""
    fixture = load_fixture(path)
    config, mode = describe(fixture)
    assert str(fixture["module"]) == "OfficialCBAM"
    dtype = fixture["x"].dtype
    n, c, h, w = fixture["x"].shape
    assert c == config["gate_channels"] and h != w and h % 2 == 1 and w % 2 == 1
    assert fixture["dy"].shape == fixture["y"].shape == fixture["dx"].shape == (n, c, h, w)
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
        elif key.endswith("num_batches_tracked"):
            assert value == state[key] + 1, key
        else:
            assert not np.array_equal(value, state[key]), key


# -- npcbam against them ------------------------------------------------------------------------
@pytest.mark.parametrize("path", FIXTURES, ids=fixture_ids(FIXTURES))
def test_state_dict_keys_and_shapes(path):
    """The fixture's keys are the official module's; npcbam's state dict has the same keys (in
    PyTorch's order) and shapes, and gives back what was loaded."""
    fixture = load_fixture(path)
    config, _ = describe(fixture)
    state = entries(fixture, "state")
    assert list(state) == CHANNEL_KEYS + ([] if config["no_spatial"] else SPATIAL_KEYS)
    ours = npcbam.OfficialCBAM(**config).state_dict()
    assert list(ours) == list(state)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in state.items()}
    loaded = build_npcbam(fixture).state_dict()
    for key, value in state.items():
        assert np.array_equal(loaded[key], value), key


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_ids(FIXTURES))
def test_npcbam_matches_torch_fixture(path):
    """y, dx, every parameter gradient and every buffer after the forward."""
    fixture = load_fixture(path)
    dtype = fixture["x"].dtype
    tolerance = TOLERANCE[dtype]
    module, results = run_npcbam(fixture)
    assert results["y"].dtype == dtype and results["dx"].dtype == dtype

    params, buffers = set(entries(fixture, "grad")), set(entries(fixture, "after"))
    assert set(module.grads) == params, "gradients for exactly the parameters"
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
