"""Write ``tests/parity/fixtures/timm/``: CBAM in timm's layout on an input with exact ties,
for both tie rules (needs torch; run from any directory).

Each fixture holds ``x`` (the hand-made ties of ``make_fixtures.tied_input``), ``dy``,
``state/<name>`` (weights of npcbam's CBAM names, hidden width 4 for C = 6: not C // r),
PyTorch's ``y``, ``dx`` and ``grad/<name>`` (:mod:`torch_timm`), ``ties`` and
``torch_version``. Fixed seeds and fixed archive timestamps: a rerun writes identical bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for helpers
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixture_io import replace_fixtures
from make_fixtures import tied_input
from torch_timm import TIES, torch_timm_results

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "timm"
CHANNELS, HIDDEN, KERNEL = 6, 4, 3


def timm_state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Normal weights scaled by 1/sqrt(fan_in), keyed and shaped as npcbam's CBAM's."""
    return {
        "mlp.0.weight": rng.standard_normal((HIDDEN, CHANNELS, 1, 1)) / np.sqrt(CHANNELS),
        "mlp.2.weight": rng.standard_normal((CHANNELS, HIDDEN, 1, 1)) / np.sqrt(HIDDEN),
        "conv.weight": rng.standard_normal((1, 2, KERNEL, KERNEL)) / np.sqrt(2 * KERNEL**2),
    }


def make_fixture(ties: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(31)
    state = timm_state(rng)
    x = tied_input(rng, (2, CHANNELS, 5, 4))
    dy = rng.standard_normal(x.shape)
    results = torch_timm_results(x, dy, state, ties)
    return {
        "x": x,
        "dy": dy,
        **{f"state/{name}": value for name, value in state.items()},
        **results,
        "ties": np.array(ties),
        "torch_version": np.array(str(torch.__version__)),
    }


def main() -> None:
    torch.set_num_threads(1)
    fixtures = {f"timm_ties_{ties}_float64.npz": make_fixture(ties) for ties in TIES}
    first, split = (fixtures[f"timm_ties_{t}_float64.npz"] for t in TIES)
    if np.array_equal(first["dx"], split["dx"]):
        raise RuntimeError("the two tie rules give the same dx: the input has no effective tie")
    replace_fixtures(FIXTURE_DIR, fixtures, str(torch.__version__))


if __name__ == "__main__":
    main()
