"""Write the PyTorch parity fixtures of ``tests/test_parity_official.py`` (needs torch).

Run ``python tests/parity/make_official_fixtures.py`` from any directory (with npcbam
installed, which ``tests/helpers.py`` imports): it replaces every ``.npz`` in
``tests/parity/fixtures/official/`` with fresh ones, one per configuration of the official CBAM
(:mod:`torch_official`), mode ("train", "eval") and dtype (float64, float32). Each holds:

- ``module`` ("OfficialCBAM"), ``config/gate_channels``, ``config/reduction_ratio``,
  ``config/pool_types`` (an array of str), ``config/no_spatial``, ``mode``, ``seed`` and
  ``torch_version``;
- ``x``, ``dy`` (the upstream gradient) and ``state/<key>``: the full initial state dict
  (random weights, and random BatchNorm weight, bias and running statistics, so that
  evaluation mode is far from an identity; ``num_batches_tracked`` int64);
- PyTorch's results: ``y``, ``dx``, ``grad/<key>`` for every parameter and ``after/<key>`` for
  every buffer after the forward (train mode: momentum 0.01, unbiased batch variance, counter
  incremented; eval mode: unchanged).

All data are drawn from a fixed seed per configuration and mode and are exactly representable
in float32, so the float32 and the float64 fixture of a configuration and mode hold the same
problem. A seed is skipped, deterministically, for the next one when the problem is unsuitable
for a float32 comparison: a kink within ``MIN_KINK_MARGIN`` (a ReLU input, a top-2 gap of a
max, an L2 norm near 0), a stored result that is all zero, or PyTorch's float32 results off its
float64 ones by more than ``MAX_FLOAT32_ERROR`` (normwise relative error).

The archives carry no timestamps, so a rerun with the same PyTorch writes identical bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for helpers and parity
from parity.fixture_io import replace_fixtures
from parity.torch_official import (
    MODES,
    build,
    kink_margin,
    official_errors,
    random_state,
    torch_official_results,
)

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "official"
MIN_KINK_MARGIN = 1e-5  # float32 rounding of the activations is about 1e-6 at most
MAX_FLOAT32_ERROR = 1e-5  # a tenth of the float32 test's 1e-4
MAX_ATTEMPTS = 50
DTYPES = {"float64": (np.float64, torch.float64), "float32": (np.float32, torch.float32)}

# (file name stem, constructor arguments, shape of x (odd H != W), base seed)
CONFIGS = [
    ("default_c8_r2",
     {"gate_channels": 8, "reduction_ratio": 2, "pool_types": ("avg", "max"),
      "no_spatial": False},
     (2, 8, 5, 3), 1000),
    ("all_four_c16_r4",
     {"gate_channels": 16, "reduction_ratio": 4, "pool_types": ("avg", "max", "lp", "lse"),
      "no_spatial": False},
     (2, 16, 3, 5), 2000),
    ("lse_c12_r3",
     {"gate_channels": 12, "reduction_ratio": 3, "pool_types": ("lse",), "no_spatial": False},
     (2, 12, 5, 3), 3000),
    ("lp_max_no_spatial_c10_r2",
     {"gate_channels": 10, "reduction_ratio": 2, "pool_types": ("lp", "max"),
      "no_spatial": True},
     (2, 10, 3, 5), 4000),
]  # fmt: skip


def draw_problem(config: dict, shape, seed: int):
    """State, ``x`` and ``dy`` from ``seed``, all exact in float32 (held in float64)."""
    rng = np.random.default_rng(seed)
    state = random_state(build(config), rng)
    x = rng.standard_normal(shape).astype(np.float32).astype(np.float64)
    dy = rng.standard_normal(shape).astype(np.float32).astype(np.float64)
    return state, x, dy


def has_zero_tensor(results: dict) -> bool:
    """Whether a result is all zero (say the MLP gradients with every hidden unit inactive):
    a weak test, so the seed is skipped."""
    return any(
        not np.abs(value).max() > 0
        for key, value in results.items()
        if not key.endswith("num_batches_tracked")
    )


def check_results(stem: str, results: dict, np_dtype) -> None:
    """Dtypes as documented: ``num_batches_tracked`` int64 0-d, everything else ``np_dtype``."""
    for key, value in results.items():
        if key.endswith("num_batches_tracked"):
            if value.dtype != np.int64 or value.shape != ():
                raise RuntimeError(f"{stem}: {key} is {value.dtype} {value.shape}, not int64 0-d")
        elif value.dtype != np_dtype:
            raise RuntimeError(f"{stem}: {key} is {value.dtype}, not {np.dtype(np_dtype)}")


def make_fixtures(stem: str, config: dict, shape, base_seed: int, mode: str):
    """The float64 and the float32 fixture of one configuration and mode, from the first seed
    (``base_seed``, ``base_seed + 1``, ...) whose problem suits both."""
    for seed in range(base_seed, base_seed + MAX_ATTEMPTS):
        state, x, dy = draw_problem(config, shape, seed)
        if kink_margin(config, state, x) < MIN_KINK_MARGIN:
            continue
        results = {
            name: torch_official_results(config, mode, state, x, dy, torch_dtype)
            for name, (_, torch_dtype) in DTYPES.items()
        }
        errors = official_errors(results["float32"], results["float64"])
        if max(errors.values()) <= MAX_FLOAT32_ERROR and not has_zero_tensor(results["float64"]):
            break
    else:
        raise RuntimeError(f"{stem} ({mode}): no suitable seed in {MAX_ATTEMPTS} attempts")

    fixtures = {}
    for dtype_name, (np_dtype, _) in DTYPES.items():
        check_results(stem, results[dtype_name], np_dtype)

        def cast(value, np_dtype=np_dtype):
            return value if np.issubdtype(value.dtype, np.integer) else value.astype(np_dtype)

        fixtures[f"{stem}_{mode}_{dtype_name}.npz"] = {
            "module": np.array("OfficialCBAM"),  # 0-d fixed-width str_, no pickle
            "config/gate_channels": np.array(config["gate_channels"]),
            "config/reduction_ratio": np.array(config["reduction_ratio"]),
            "config/pool_types": np.array(config["pool_types"]),  # 1-d str_
            "config/no_spatial": np.array(config["no_spatial"]),
            "mode": np.array(mode),
            "seed": np.array(seed),
            "x": x.astype(np_dtype),
            "dy": dy.astype(np_dtype),
            **{f"state/{key}": cast(value) for key, value in state.items()},
            **results[dtype_name],
            "torch_version": np.array(str(torch.__version__)),
        }
    return fixtures


def main() -> None:
    """Regenerate every official-CBAM fixture and print their names, seeds and sizes."""
    torch.set_num_threads(1)
    # compute everything first: a failed check leaves the existing fixtures untouched
    fixtures = {}
    for stem, config, shape, base_seed in CONFIGS:
        for index, mode in enumerate(MODES):
            fixtures.update(make_fixtures(stem, config, shape, base_seed + 100 * index, mode))
    replace_fixtures(FIXTURE_DIR, fixtures, torch.__version__)


if __name__ == "__main__":
    main()
