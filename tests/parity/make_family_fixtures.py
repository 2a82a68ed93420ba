"""Write the PyTorch parity fixtures of ``tests/test_parity_family.py`` (needs torch).

Run ``python tests/parity/make_family_fixtures.py`` from any directory (with npcbam
installed, which ``tests/helpers.py`` imports): it replaces every ``.npz`` in
``tests/parity/fixtures/family/`` with fresh ones, one per configuration of SE or ECA
(:mod:`torch_family`) and dtype (float64, float32). Each fixture holds:

- ``module`` (the npcbam class name), ``config/<argument>`` (the constructor's arguments; an
  ECA without ``config/kernel_size`` uses the adaptive size), ``seed`` and ``torch_version``;
- ``x``, ``dy`` (the upstream gradient) and ``state/<key>``: the initial state dict;
- PyTorch's results: ``y``, ``dx`` and ``grad/<key>`` for every parameter.

All data are drawn from a fixed seed per configuration and are exactly representable in
float32, so the float32 and the float64 fixture of a configuration hold the same problem. A
seed is skipped, deterministically, for the next one when its problem is unsuitable for a
float32 comparison: an input of SE's ReLU within ``MIN_KINK_MARGIN`` of 0, a stored result
that is all zero, or PyTorch's float32 results off its float64 ones by more than
``MAX_FLOAT32_ERROR`` (normwise relative error), a tenth of the float32 test's bound.

The archives carry no timestamps, so a rerun with the same PyTorch writes identical bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for helpers and parity
from parity.fixture_io import replace_fixtures
from parity.stored import errors_against
from parity.torch_family import MODULES, build, kink_margin, random_state, torch_family_results

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "family"
MIN_KINK_MARGIN = 1e-5  # float32 rounding of the activations is about 1e-6 at most
MAX_FLOAT32_ERROR = 1e-6  # a tenth of the float32 test's 1e-5
MAX_ATTEMPTS = 50
DTYPES = {"float64": (np.float64, torch.float64), "float32": (np.float32, torch.float32)}

# (file name stem, module, constructor arguments, shape of x, base seed)
CONFIGS = [
    ("se_c16_r4", "SE", {"channels": 16, "reduction": 4}, (2, 16, 5, 3), 100),
    ("se_c4_r4", "SE", {"channels": 4, "reduction": 4}, (1, 4, 1, 1), 200),  # hidden 1, 1 pixel
    ("se_c6_r2", "SE", {"channels": 6, "reduction": 2}, (3, 6, 4, 7), 300),
    # timm's default width for C = 16: make_divisible(16 / 16, 8) = 8, where C // 16 = 1
    ("se_c16_r16_hidden8", "SE", {"channels": 16, "reduction": 16, "hidden": 8},
     (2, 16, 3, 4), 400),
    ("eca_c8_adaptive", "ECA", {"channels": 8}, (2, 8, 5, 3), 500),  # k = 3
    ("eca_c6_adaptive", "ECA", {"channels": 6}, (1, 6, 1, 1), 600),  # k = 1 (timm: 3)
    ("eca_c128_adaptive", "ECA", {"channels": 128}, (2, 128, 2, 3), 700),  # k = 5
    ("eca_c5_k5", "ECA", {"channels": 5, "kernel_size": 5}, (2, 5, 3, 4), 800),  # k = C
    ("eca_c7_k3", "ECA", {"channels": 7, "kernel_size": 3}, (3, 7, 2, 2), 900),  # timm's k
]  # fmt: skip


def draw_problem(name: str, config: dict, shape, seed: int):
    """State, ``x`` and ``dy`` from ``seed``, all exact in float32 (held in float64)."""
    rng = np.random.default_rng(seed)
    state = random_state(build(name, config), rng)
    x = rng.standard_normal(shape).astype(np.float32).astype(np.float64)
    dy = rng.standard_normal(shape).astype(np.float32).astype(np.float64)
    return state, x, dy


def make_fixtures(stem: str, name: str, config: dict, shape, base_seed: int):
    """The float64 and the float32 fixture of one configuration, from the first seed
    (``base_seed``, ``base_seed + 1``, ...) whose problem suits both."""
    for seed in range(base_seed, base_seed + MAX_ATTEMPTS):
        state, x, dy = draw_problem(name, config, shape, seed)
        if kink_margin(name, config, state, x) < MIN_KINK_MARGIN:
            continue
        results = {
            dtype_name: torch_family_results(name, config, state, x, dy, torch_dtype)
            for dtype_name, (_, torch_dtype) in DTYPES.items()
        }
        errors = errors_against(results["float64"], results["float32"])
        all_nonzero = all(np.abs(v).max() > 0 for v in results["float64"].values())
        if max(errors.values()) <= MAX_FLOAT32_ERROR and all_nonzero:
            break
    else:
        raise RuntimeError(f"{stem}: no suitable seed in {MAX_ATTEMPTS} attempts")

    fixtures = {}
    for dtype_name, (np_dtype, _) in DTYPES.items():
        for key, value in results[dtype_name].items():
            if value.dtype != np_dtype:
                raise RuntimeError(f"{stem}: {key} is {value.dtype}, not {np.dtype(np_dtype)}")
        fixtures[f"{stem}_{dtype_name}.npz"] = {
            "module": np.array(name),  # 0-d fixed-width str_, no pickle
            **{f"config/{arg}": np.array(value) for arg, value in config.items()},
            "seed": np.array(seed),
            "x": x.astype(np_dtype),
            "dy": dy.astype(np_dtype),
            **{f"state/{key}": value.astype(np_dtype) for key, value in state.items()},
            **results[dtype_name],
            "torch_version": np.array(str(torch.__version__)),
        }
    return fixtures


def main() -> None:
    """Regenerate every SE and ECA fixture and print their names, seeds and sizes."""
    torch.set_num_threads(1)
    if {name for _, name, _, _, _ in CONFIGS} != set(MODULES):
        raise RuntimeError("every reference module needs a configuration")
    # compute everything first: a failed check leaves the existing fixtures untouched
    fixtures = {}
    for stem, name, config, shape, base_seed in CONFIGS:
        fixtures.update(make_fixtures(stem, name, config, shape, base_seed))
    replace_fixtures(FIXTURE_DIR, fixtures, torch.__version__)


if __name__ == "__main__":
    main()
