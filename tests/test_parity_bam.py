"""``npcbam.BAM`` (both gate forms), the dilated ``npcbam.Conv2d`` and ``npcbam.BatchNorm1d``
against stored PyTorch results; PyTorch is not needed.

The fixtures in ``tests/parity/fixtures/bam`` come from ``tests/parity/torch_bam.py`` (written
by ``tests/parity/make_bam_fixtures.py``): BAM in the paper form (non-square input; hidden
width 1 with dilation 2) and in the official form (the official code's arithmetic and keys, on
a square input), each in training and evaluation mode; two convolutions with dilation > 1,
stride > 1, padding 0 and non-square inputs and kernels; BatchNorm1d in both modes. float64
and float32. Each holds the constructor's arguments, the full initial state dict (random
BatchNorm parameters and running statistics included), ``x``, ``dy``, and PyTorch's ``y``,
``dx``, ``grad/<key>`` and the buffers after the forward ``after/<key>``.

The error of a tensor is ``max|npcbam - torch| / max|torch|`` (for a bias whose gradient a
training-mode BatchNorm makes zero, divided by its layer's weight gradient instead); the bounds
are 1e-10 (float64) and 1e-5 (float32). ``num_batches_tracked`` must match exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from parity.bam_keys import scale_key
from parity.stored import entries, errors_against, load_fixture, run_module

import npcbam

FIXTURE_DIR = Path(__file__).resolve().parent / "parity" / "fixtures" / "bam"
FIXTURES = sorted(FIXTURE_DIR.glob("*.npz"))
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
MAX_TOTAL_BYTES = 450_000


def describe(fixture: dict) -> tuple[str, dict, str]:
    """(module name, constructor arguments as Python values, mode)."""
    config = {}
    for arg, value in entries(fixture, "config").items():
        if value.dtype.kind == "U":
            config[arg] = str(value)
        elif value.ndim == 1:
            config[arg] = tuple(int(v) for v in value)
        else:
            config[arg] = int(value)
    return str(fixture["module"]), config, str(fixture["mode"])


def build_npcbam(fixture: dict):
    """The npcbam module of a fixture, holding the fixture's initial state, in its mode."""
    name, config, mode = describe(fixture)
    module = getattr(npcbam, name)(**config)
    module.load_state_dict(entries(fixture, "state"))
    return module.train(mode == "train")


def fixture_ids(paths):
    return [path.stem for path in paths]


# -- the fixtures themselves --------------------------------------------------------------------
def test_fixtures_cover_what_the_issue_asks_for():
    """BAM in both gate forms and both modes (the official one on a square input), a dilated
    convolution with stride > 1, padding 0 and non-square input and kernel, BatchNorm1d in
    both modes; each in float64 and float32."""
    assert FIXTURES, f"no fixtures in {FIXTURE_DIR}; run tests/parity/make_bam_fixtures.py"
    covered, combined = set(), False
    for path in FIXTURES:
        fixture = load_fixture(path)
        name, config, mode = describe(fixture)
        covered.add((name, config.get("gate"), mode, fixture["x"].dtype.name))
        if name == "BAM" and config["gate"] == "official":
            assert fixture["x"].shape[2] == fixture["x"].shape[3], "official: square inputs"
        if name == "Conv2d":
            pairs = [np.broadcast_to(config[k], 2) for k in ("dilation", "stride", "kernel_size")]
            combined |= (
                min(pairs[0]) > 1
                and min(pairs[1]) > 1
                and config["padding"] == 0
                and fixture["x"].shape[2] != fixture["x"].shape[3]
                and pairs[2][0] != pairs[2][1]
            )
    dtypes, modes = ("float64", "float32"), ("train", "eval")
    expected = {("BAM", g, m, d) for g in ("paper", "official") for m in modes for d in dtypes}
    expected |= {("BatchNorm1d", None, m, d) for m in modes for d in dtypes}
    expected |= {("Conv2d", None, "train", d) for d in dtypes}
    assert covered == expected
    assert combined, "a convolution with dilation > 1, stride > 1, padding 0, non-square x, kernel"


def test_fixtures_stay_small():
    total = sum(path.stat().st_size for path in FIXTURES)
    assert total <= MAX_TOTAL_BYTES, f"{total} bytes of BAM fixtures"


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_ids(FIXTURES))
def test_fixture_is_consistent(path):
    """One dtype throughout; buffers unchanged by an eval forward and moved (counter + 1) by
    a train one."""
    fixture = load_fixture(path)
    _, _, mode = describe(fixture)
    dtype = fixture["x"].dtype
    for key, value in fixture.items():
        if key.endswith("num_batches_tracked"):
            assert value.dtype == np.int64 and value.shape == (), key
        elif key.startswith(("state/", "grad/", "after/")) or key in ("x", "dy", "y", "dx"):
            assert value.dtype == dtype, f"{key} is {value.dtype}, not {dtype}"
    assert fixture["dy"].shape == fixture["y"].shape and fixture["dx"].shape == fixture["x"].shape
    state = entries(fixture, "state")
    for key, value in entries(fixture, "after").items():
        if mode == "eval":
            assert np.array_equal(value, state[key]), key
        elif key.endswith("num_batches_tracked"):
            assert value == state[key] + 1, key
        else:
            assert not np.array_equal(value, state[key]), key


# -- npcbam against them ------------------------------------------------------------------------
@pytest.mark.parametrize("path", FIXTURES, ids=fixture_ids(FIXTURES))
def test_state_dict_keys_and_shapes(path):
    """The fixture's keys (for BAM, the official module's) are npcbam's, in the same order and
    shapes, and npcbam gives back what was loaded."""
    fixture = load_fixture(path)
    name, config, _ = describe(fixture)
    state = entries(fixture, "state")
    ours = getattr(npcbam, name)(**config).state_dict()
    assert list(ours) == list(state)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in state.items()}
    loaded = build_npcbam(fixture).state_dict()
    for key, value in state.items():
        assert np.array_equal(loaded[key], value), key


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_ids(FIXTURES))
def test_npcbam_matches_torch_fixture(path):
    """y, dx, every parameter gradient and every buffer after the forward. For the official
    BAM fixtures this is the acceptance check: a state dict with the official keys loads into
    ``BAM(gate="official")`` and gives the output of the PyTorch reference of the official
    code."""
    fixture = load_fixture(path)
    _, _, mode = describe(fixture)
    dtype = fixture["x"].dtype
    module = build_npcbam(fixture)
    results = run_module(module, fixture)
    assert results["y"].dtype == dtype and results["dx"].dtype == dtype
    params, buffers = set(entries(fixture, "grad")), set(entries(fixture, "after"))
    assert set(results) == {"y", "dx"} | {f"grad/{k}" for k in params} | {
        f"after/{k}" for k in buffers
    }
    errors = errors_against(fixture, results, scale_key(mode))
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE[dtype], (
        f"{path.name} (torch {fixture['torch_version']}): error of {worst} is "
        f"{errors[worst]:.3g} > {TOLERANCE[dtype]:g}; worst five: "
        f"{sorted(errors.items(), key=lambda item: -item[1])[:5]}"
    )
