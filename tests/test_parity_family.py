"""``npcbam.SE`` and ``npcbam.ECA`` against stored PyTorch results; PyTorch is not needed.

The fixtures in ``tests/parity/fixtures/family`` come from ``tests/parity/torch_family.py``
(written by ``tests/parity/make_family_fixtures.py``): several configurations of each module
(SE: hidden widths 1 to 8, a timm width given by ``hidden``; ECA: the adaptive kernel sizes
1, 3 and 5, and explicit kernels k = C and timm's 3), float64 and float32. Each holds the
constructor's arguments, the initial state dict, an input ``x``, an upstream gradient ``dy``,
and PyTorch's ``y``, ``dx`` and parameter gradients ``grad/<key>``.

The error of a tensor is ``max|npcbam - torch| / max|torch|``; the bounds are 1e-10 (float64)
and 1e-5 (float32).
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

import numpy as np
import pytest
from parity.stored import entries, errors_against, load_fixture, run_module

import npcbam
from npcbam.nn.eca import eca_kernel_size

FIXTURE_DIR = Path(__file__).resolve().parent / "parity" / "fixtures" / "family"
FIXTURES = sorted(FIXTURE_DIR.glob("*.npz"))
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
MODULES = ("SE", "ECA")
KEYS = {"SE": ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"], "ECA": ["conv.weight"]}
MAX_TOTAL_BYTES = 300_000


def describe(fixture: dict) -> tuple[str, dict]:
    """(module name, constructor arguments as Python ints)."""
    config = {arg: int(value) for arg, value in entries(fixture, "config").items()}
    return str(fixture["module"]), config


def build_npcbam(fixture: dict):
    """The npcbam module of a fixture, holding the fixture's initial state."""
    name, config = describe(fixture)
    module = getattr(npcbam, name)(**config)
    module.load_state_dict(entries(fixture, "state"))
    return module


def fixture_ids(paths):
    return [path.stem for path in paths]


# -- the fixtures themselves --------------------------------------------------------------------
def test_fixture_folder_is_not_empty():
    assert FIXTURES, (
        f"no .npz fixtures in {FIXTURE_DIR}; run `python tests/parity/make_family_fixtures.py`"
        " (needs torch) to generate them"
    )


def test_fixtures_cover_both_modules_both_dtypes_and_the_edge_cases():
    covered, kernels, hidden, one_pixel = set(), set(), set(), set()
    for path in FIXTURES:
        fixture = load_fixture(path)
        name, _ = describe(fixture)
        covered.add((name, fixture["x"].dtype.name))
        if name == "ECA":
            kernels.add(fixture["state/conv.weight"].shape[-1])
        else:
            hidden.add(fixture["state/fc1.weight"].shape[0])
        n, _, h, w = fixture["x"].shape
        if n == 1 and h == w == 1:
            one_pixel.add(name)
    assert covered == set(product(MODULES, ("float64", "float32")))
    assert kernels >= {1, 3, 5}, "ECA's adaptive sizes at C < 8, C < 128 and C < 2048"
    assert 1 in hidden, "an SE with C = r (hidden width 1)"
    assert one_pixel == set(MODULES), "N = 1, H = W = 1 for each module"


def test_fixtures_stay_small():
    total = sum(path.stat().st_size for path in FIXTURES)
    assert total <= MAX_TOTAL_BYTES, f"{total} bytes of family fixtures"


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_ids(FIXTURES))
def test_fixture_is_consistent(path):
    """One dtype throughout, shapes as documented, and an ECA kernel as its configuration
    says: the given one, or the paper's adaptive size."""
    fixture = load_fixture(path)
    name, config = describe(fixture)
    dtype = fixture["x"].dtype
    for key, value in fixture.items():
        if key.startswith(("state/", "grad/")) or key in ("x", "dy", "y", "dx"):
            assert value.dtype == dtype, f"{key} is {value.dtype}, not {dtype}"
    assert fixture["x"].shape == fixture["dy"].shape == fixture["y"].shape == fixture["dx"].shape
    assert fixture["x"].shape[1] == config["channels"]
    assert set(entries(fixture, "grad")) == set(entries(fixture, "state"))
    if name == "ECA":
        expected = config.get("kernel_size", eca_kernel_size(config["channels"]))
        assert fixture["state/conv.weight"].shape == (1, 1, expected)


# -- npcbam against them ------------------------------------------------------------------------
@pytest.mark.parametrize("path", FIXTURES, ids=fixture_ids(FIXTURES))
def test_state_dict_keys_and_shapes(path):
    """The fixture's keys are timm's (SE) and the official ones (ECA); npcbam has the same keys
    in the same order and shapes, and gives back what was loaded."""
    fixture = load_fixture(path)
    name, config = describe(fixture)
    state = entries(fixture, "state")
    assert list(state) == KEYS[name]
    ours = getattr(npcbam, name)(**config).state_dict()
    assert list(ours) == list(state)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in state.items()}
    loaded = build_npcbam(fixture).state_dict()
    for key, value in state.items():
        assert np.array_equal(loaded[key], value), key


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_ids(FIXTURES))
def test_npcbam_matches_torch_fixture(path):
    """y, dx and every parameter gradient."""
    fixture = load_fixture(path)
    dtype = fixture["x"].dtype
    module = build_npcbam(fixture)
    results = run_module(module, fixture)
    assert results["y"].dtype == dtype and results["dx"].dtype == dtype
    assert set(results) == {"y", "dx"} | {f"grad/{key}" for key in entries(fixture, "grad")}
    errors = errors_against(fixture, results)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE[dtype], (
        f"{path.name} (torch {fixture['torch_version']}): error of {worst} is "
        f"{errors[worst]:.3g} > {TOLERANCE[dtype]:g}; all: {errors}"
    )
