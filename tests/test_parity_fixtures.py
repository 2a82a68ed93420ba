"""npcbam against stored PyTorch results (``tests/parity/fixtures``); PyTorch is not needed.

Each fixture holds an input, an upstream gradient, weights and what PyTorch computed from them
(``y``, ``dx`` and the parameter gradients); ``tests/parity/make_fixtures.py`` regenerates them.
The error of a tensor is ``max|npcbam - torch| / max|torch|``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import relative_error
from parity.stored import load_fixture

import npcbam

FIXTURE_DIR = Path(__file__).resolve().parent / "parity" / "fixtures"
FIXTURES = sorted(FIXTURE_DIR.glob("*.npz"))
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
WEIGHT_NAMES = ("mlp.0.weight", "mlp.2.weight", "conv.weight")


def run_npcbam(fixture: dict[str, np.ndarray]) -> tuple[npcbam.CBAM, np.ndarray, np.ndarray]:
    """Build a CBAM with the fixture's configuration and weights, forward ``x``, backward
    ``dy``; return the module, ``y`` and ``dx``."""
    module = npcbam.CBAM(
        int(fixture["channels"]), int(fixture["reduction"]), int(fixture["kernel_size"])
    )
    module.load_state_dict({name: fixture[name] for name in WEIGHT_NAMES})
    y = module.forward(fixture["x"])
    dx = module.backward(fixture["dy"])
    return module, y, dx


def test_fixture_folder_is_not_empty():
    assert FIXTURES, (
        f"no .npz fixtures in {FIXTURE_DIR}; run `python tests/parity/make_fixtures.py` "
        "(needs torch) to generate them"
    )


def test_fixtures_cover_both_dtypes_and_the_ties_case():
    dtypes = {load_fixture(path)["x"].dtype for path in FIXTURES}
    assert dtypes == set(TOLERANCE), f"fixture dtypes {dtypes}; expected float32 and float64"
    ties = [path.name for path in FIXTURES if path.name.startswith("ties_")]
    assert ties, f"no ties_* fixture among {[path.name for path in FIXTURES]}"


@pytest.mark.parametrize("path", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_npcbam_matches_torch_fixture(path):
    fixture = load_fixture(path)
    dtype = fixture["x"].dtype
    tolerance = TOLERANCE[dtype]
    module, y, dx = run_npcbam(fixture)
    assert y.dtype == dtype and dx.dtype == dtype

    errors = {"y": relative_error(y, fixture["y"]), "dx": relative_error(dx, fixture["dx"])}
    grads = module.grads
    expected_grads = {name[len("grad/") :] for name in fixture if name.startswith("grad/")}
    assert set(grads) == expected_grads == set(WEIGHT_NAMES)
    for name, grad in grads.items():
        errors[f"grad/{name}"] = relative_error(grad, fixture[f"grad/{name}"])
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance, (
        f"{path.name} (torch {fixture['torch_version']}): relative error of {worst} is "
        f"{errors[worst]:.3g} > {tolerance:g}; all errors: {errors}"
    )


def count_ties(values: np.ndarray, axis: int) -> np.ndarray:
    """How many entries equal the maximum along ``axis``."""
    return (values == values.max(axis=axis, keepdims=True)).sum(axis=axis)


def first_is_not_last_argmax(values: np.ndarray, axis: int) -> np.ndarray:
    """Where the first and the last maximal index along ``axis`` differ (a tie that tells the
    first-index policy apart from a last-index one)."""
    last = values.shape[axis] - 1 - np.flip(values, axis=axis).argmax(axis=axis)
    return values.argmax(axis=axis) != last


@pytest.mark.parametrize(
    "path",
    [path for path in FIXTURES if path.name.startswith("ties_")],
    ids=lambda path: path.stem,
)
def test_ties_fixture_really_has_ties(path):
    """The tie policy (the first maximal index gets the gradient) is only tested where exact
    ties exist in the maxima CBAM takes."""
    fixture = load_fixture(path)
    x = fixture["x"]
    assert x.dtype == np.float64
    # global spatial max of each channel (channel attention), over H×W flattened
    per_channel = x.reshape(*x.shape[:2], -1)  # (N, C, H*W)
    assert (count_ties(per_channel, axis=2) >= 2).sum() >= 2
    assert first_is_not_last_argmax(per_channel, axis=2).any()
    # max over channels (spatial attention) runs on channel_gate * x: the ties must survive it
    module, _, _ = run_npcbam(fixture)
    for values in (x, x * module.channel_map):
        assert (count_ties(values, axis=1) >= 2).sum() >= 2
        assert first_is_not_last_argmax(values, axis=1).any()
