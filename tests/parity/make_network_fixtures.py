"""Write the PyTorch parity fixtures of ``tests/test_parity_networks.py`` (needs torch).

Run ``python tests/parity/make_network_fixtures.py`` from any directory (with npcbam
installed, which ``tests/helpers.py`` imports): it replaces every ``.npz`` in
``tests/parity/fixtures/networks/`` with fresh ones, one per configuration, mode ("train",
"eval") and dtype (float64, float32). Each fixture holds:

- ``network`` (the npcbam class name), ``config/<argument>`` (the constructor's arguments),
  ``mode``, ``seed`` and ``torch_version``;
- ``x``, ``dy`` (the upstream gradient) and ``state/<key>``: the full initial state dict,
  BatchNorm buffers included (``num_batches_tracked`` int64);
- PyTorch's results: ``y``, ``dx``, ``grad/<key>`` for every parameter and ``after/<key>`` for
  every buffer after the forward (in train mode the running statistics are updated with
  momentum 0.1 and the unbiased batch variance, and the counter is incremented; in eval mode
  they are unchanged).

All data are random, drawn from a fixed seed per configuration and mode (weights as
:func:`torch_networks.random_state` describes), and exactly representable in float32: the
float32 and the float64 fixture of a configuration and mode hold the very same problem. A
seed is skipped, deterministically, for the next one when its problem is unsuitable for a
float32 comparison, judged from PyTorch alone:

- a kink nearby: a ReLU input or a top-2 gap of a max below ``MIN_KINK_MARGIN`` in float64,
  where rounding could switch a mask or a winner (activations are of order 1);
- a stored result all zero (every hidden unit of a shared MLP inactive, say): a weak test;
- ill-conditioning: PyTorch's float32 result off its float64 one by more than
  ``MAX_FLOAT32_ERROR`` (normwise relative error) on any stored tensor. Below that, float32
  rounding flipped no winner that matters, and any accurate float32 implementation stays well
  within the test's 1e-4.

The archives carry no timestamps, so a rerun with the same PyTorch writes identical bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for helpers and parity
from parity.fixture_io import replace_fixtures
from parity.torch_networks import (
    MODES,
    build,
    kink_margin,
    network_errors,
    random_state,
    torch_network_results,
    vanishing_gradient_scale,
)

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "networks"
MIN_KINK_MARGIN = 1e-5  # float32 rounding of the activations is about 1e-6 at most
MAX_FLOAT32_ERROR = 1e-5  # a tenth of the float32 test's 1e-4
MAX_ATTEMPTS = 50
DTYPES = {"float64": (np.float64, torch.float64), "float32": (np.float32, torch.float32)}

# (file name stem, network, constructor arguments, shape of x, base seed)
CONFIGS = [
    ("conv_cbam_i3_o6_r050", "ConvCBAM", {"in_channels": 3, "out_channels": 6, "r": 0.5},
     (2, 3, 6, 5), 100),
    ("conv_cbam_i4_o4_r050", "ConvCBAM", {"in_channels": 4, "out_channels": 4, "r": 0.5},
     (1, 4, 5, 5), 200),
    ("conv_cbam_i3_o8_r025", "ConvCBAM", {"in_channels": 3, "out_channels": 8, "r": 0.25},
     (2, 3, 5, 7), 300),
    ("resblock_identity_c4_r2_k3", "ResidualBlockCBAM",
     {"in_channels": 4, "out_channels": 4, "stride": 1, "reduction": 2, "kernel_size": 3},
     (2, 4, 6, 6), 400),
    ("resblock_project_c4to8_r4_k7", "ResidualBlockCBAM",
     {"in_channels": 4, "out_channels": 8, "stride": 1, "reduction": 4, "kernel_size": 7},
     (2, 4, 5, 7), 500),
    ("resblock_project_stride2_c4_r2_k3", "ResidualBlockCBAM",
     {"in_channels": 4, "out_channels": 4, "stride": 2, "reduction": 2, "kernel_size": 3},
     (2, 4, 7, 6), 600),
    ("fpn_c4_r2_k3", "ResnetFPN4CBAM", {"num_channels": 4, "reduction": 2, "kernel_size": 3},
     (2, 4, 16, 16), 700),
    ("fpn_c4_r4_k7", "ResnetFPN4CBAM", {"num_channels": 4, "reduction": 4, "kernel_size": 7},
     (2, 4, 8, 16), 800),
]  # fmt: skip


def draw_problem(network: str, config: dict, shape, seed: int):
    """State, ``x`` and ``dy`` from ``seed``, all exact in float32 (held in float64)."""
    rng = np.random.default_rng(seed)
    module = build(network, config)
    state = random_state(module, rng)
    x = rng.standard_normal(shape).astype(np.float32).astype(np.float64)
    with torch.no_grad():
        y_shape = tuple(module.eval()(torch.from_numpy(x)).shape)
    dy = rng.standard_normal(y_shape).astype(np.float32).astype(np.float64)
    return state, x, dy


def has_zero_tensor(network: str, mode: str, results: dict) -> bool:
    """Whether a result that should carry information is all zero (say a gradient of the
    shared MLP whose every hidden unit is inactive): a weak test, so the seed is skipped."""
    return any(
        not np.abs(value).max() > 0
        for key, value in results.items()
        if not key.endswith("num_batches_tracked")
        and vanishing_gradient_scale(network, mode, key) is None
    )


def check_results(stem: str, network: str, mode: str, results: dict, np_dtype) -> None:
    """Dtypes as expected, and the gradients that vanish in exact arithmetic indeed at
    rounding level in float64."""
    for key, value in results.items():
        if key.endswith("num_batches_tracked"):
            if value.dtype != np.int64 or value.shape != ():
                raise RuntimeError(f"{stem}: {key} is {value.dtype} {value.shape}, not int64 0-d")
            continue
        if value.dtype != np_dtype:
            raise RuntimeError(f"{stem}: {key} is {value.dtype}, not {np.dtype(np_dtype)}")
        scale_key = vanishing_gradient_scale(network, mode, key)
        if scale_key is not None and np_dtype == np.float64:
            ratio = np.abs(value).max() / np.abs(results[scale_key]).max()
            if ratio > 1e-12:
                raise RuntimeError(f"{stem}: {key} should vanish, is {ratio:.3g} of {scale_key}")


def make_fixtures(stem: str, network: str, config: dict, shape, base_seed: int, mode: str):
    """The float64 and the float32 fixture of one configuration and mode, from the first
    seed (``base_seed``, ``base_seed + 1``, ...) whose problem suits both."""
    for seed in range(base_seed, base_seed + MAX_ATTEMPTS):
        state, x, dy = draw_problem(network, config, shape, seed)
        if kink_margin(network, config, mode, state, x) < MIN_KINK_MARGIN:
            continue
        results = {
            name: torch_network_results(network, config, mode, state, x, dy, torch_dtype)
            for name, (_, torch_dtype) in DTYPES.items()
        }
        errors = network_errors(network, mode, results["float32"], results["float64"])
        if max(errors.values()) <= MAX_FLOAT32_ERROR and not has_zero_tensor(
            network, mode, results["float64"]
        ):
            break
    else:
        raise RuntimeError(f"{stem} ({mode}): no suitable seed in {MAX_ATTEMPTS} attempts")

    fixtures = {}
    for dtype_name, (np_dtype, _) in DTYPES.items():
        check_results(stem, network, mode, results[dtype_name], np_dtype)

        def cast(value, np_dtype=np_dtype):
            return value if np.issubdtype(value.dtype, np.integer) else value.astype(np_dtype)

        fixtures[f"{stem}_{mode}_{dtype_name}.npz"] = {
            "network": np.array(network),  # 0-d fixed-width str_, no pickle
            **{f"config/{name}": np.array(value) for name, value in config.items()},
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
    """Regenerate every network fixture and print their names, seeds and sizes."""
    torch.set_num_threads(1)
    # compute everything first: a failed check leaves the existing fixtures untouched
    fixtures = {}
    for stem, network, config, shape, base_seed in CONFIGS:
        for index, mode in enumerate(MODES):
            fixtures.update(
                make_fixtures(stem, network, config, shape, base_seed + 50 * index, mode)
            )
    replace_fixtures(FIXTURE_DIR, fixtures, torch.__version__)


if __name__ == "__main__":
    main()
