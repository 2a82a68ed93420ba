"""Write the PyTorch parity fixtures of ``tests/test_parity_bam.py`` (needs torch).

Run ``python tests/parity/make_bam_fixtures.py`` from any directory (with npcbam installed,
which ``tests/helpers.py`` imports): it replaces every ``.npz`` in
``tests/parity/fixtures/bam/`` with fresh ones, one per configuration (:mod:`torch_bam`: BAM
in both gate forms, the dilated ``Conv2d``, ``BatchNorm1d``), mode ("train", "eval") and dtype
(float64, float32). Each fixture holds:

- ``module`` (the npcbam class name), ``config/<argument>`` (the constructor's arguments; a
  pair as a 1-d array), ``mode``, ``seed`` and ``torch_version``;
- ``x``, ``dy`` (the upstream gradient) and ``state/<key>``: the full initial state dict
  (random weights; random BatchNorm weights, biases and running statistics, so that evaluation
  mode is far from an identity; ``num_batches_tracked`` int64);
- PyTorch's results: ``y``, ``dx``, ``grad/<key>`` for every parameter and ``after/<key>`` for
  every buffer after the forward.

The official-form BAM fixtures have square inputs (its channel pooling is global only there);
the paper form's and the convolutions' are not square. All data are drawn from a fixed seed per
configuration and mode and are exactly representable in float32, so the float32 and the float64
fixture of a configuration and mode hold the same problem. A seed is skipped,
deterministically, for the next one when its problem is unsuitable for a float32 comparison: a
ReLU input within ``MIN_KINK_MARGIN`` of 0, a training-mode BatchNorm batch with a standard
deviation below ``MIN_BATCH_STD`` (steep: float32 rounding amplified), a stored result that is
all zero (but the gradients that are zero in exact arithmetic, :mod:`parity.bam_keys`),
PyTorch's float32 results off its float64 ones by more than ``MAX_FLOAT32_ERROR`` (normwise
relative error), a tenth of the float32 test's bound, or an ill-conditioned problem: exact
results that move by more than ``MAX_SENSITIVITY`` when every input, layer output and layer
output gradient is rounded to float32's unit roundoff (:mod:`parity.conditioning`; on the
fixtures that passed this screen, npcbam's float32 error was 0.4–1.1 times that figure, and
PyTorch's own float32 result can be far closer to the exact one than the figure by luck).

The archives carry no timestamps, so a rerun with the same PyTorch writes identical bytes.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for helpers and parity
from parity.bam_keys import scale_key, zero_in_training
from parity.conditioning import UNIT_ROUNDOFF, sensitivity
from parity.fixture_io import replace_fixtures
from parity.make_official_fixtures import check_results
from parity.stored import errors_against
from parity.torch_bam import MODES, build, margins, random_state, torch_results

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "bam"
MIN_KINK_MARGIN = 1e-5  # float32 rounding of the activations is about 1e-6 at most
MIN_BATCH_STD = 0.05
MAX_FLOAT32_ERROR = 1e-6  # a tenth of the float32 test's 1e-5
MAX_SENSITIVITY = 2e-6  # a fifth of the float32 test's 1e-5
# BAM with one hidden channel (C = r) is ill-conditioned in float32 for most draws: 3 of the
# first 200 seeds of its training-mode problem pass every screen (the first at the 51st)
MAX_ATTEMPTS = 200
DTYPES = {"float64": (np.float64, torch.float64), "float32": (np.float32, torch.float32)}

# (file name stem, module, constructor arguments, shape of x, modes, base seed); BAM with
# N = 4: over N = 2 vectors the channel branch's BatchNorm1d gives +-1 whatever its input
# (x_hat = d / sqrt(d^2 + eps)), which leaves the first layer's gradients nearly zero
CONFIGS = [
    ("bam_paper_c8_r2", "BAM", {"channels": 8, "reduction": 2, "gate": "paper"},
     (4, 8, 5, 3), MODES, 100),
    ("bam_official_c8_r2", "BAM", {"channels": 8, "reduction": 2, "gate": "official"},
     (4, 8, 5, 5), MODES, 200),
    # hidden width 1 (C = r), dilation 2, H != W
    ("bam_paper_c4_r4_d2", "BAM",
     {"channels": 4, "reduction": 4, "gate": "paper", "dilation": 2}, (4, 4, 3, 6), MODES, 400),
    # dilation > 1 with stride > 1, padding 0, non-square input and kernel
    ("conv_d2x3_s2x3", "Conv2d",
     {"in_channels": 3, "out_channels": 2, "kernel_size": (3, 2), "stride": (2, 3),
      "padding": 0, "dilation": (2, 3)}, (2, 3, 9, 11), ("train",), 500),
    ("conv_d4_s2", "Conv2d",
     {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 0,
      "dilation": 4}, (1, 2, 11, 10), ("train",), 600),
    ("batchnorm1d_d5", "BatchNorm1d", {"num_features": 5}, (4, 5), MODES, 700),
]  # fmt: skip


def draw_problem(name: str, config: dict, shape, seed: int):
    """State, ``x`` and ``dy`` (the output's shape) from ``seed``, all exact in float32 (held
    in float64)."""
    rng = np.random.default_rng(seed)
    module = build(name, config).eval()
    state = random_state(module, rng)
    with torch.no_grad():
        out_shape = tuple(module(torch.zeros(shape, dtype=torch.float64)).shape)
    x = rng.standard_normal(shape).astype(np.float32).astype(np.float64)
    dy = rng.standard_normal(out_shape).astype(np.float32).astype(np.float64)
    return state, x, dy


def has_zero_tensor(results: dict, mode: str) -> bool:
    """Whether a result that should not be zero is all zero (a weak test: the seed is
    skipped)."""
    return any(
        not np.abs(value).max() > 0
        for key, value in results.items()
        if not key.endswith("num_batches_tracked") and not zero_in_training(key, mode)
    )


def make_fixtures(stem: str, name: str, config: dict, shape, base_seed: int, mode: str):
    """The float64 and the float32 fixture of one configuration and mode, from the first seed
    (``base_seed``, ``base_seed + 1``, ...) whose problem suits both."""
    for seed in range(base_seed, base_seed + MAX_ATTEMPTS):
        state, x, dy = draw_problem(name, config, shape, seed)
        relu, spread = margins(name, config, state, x, mode)
        if relu < MIN_KINK_MARGIN or spread < MIN_BATCH_STD:
            continue
        results = {
            dtype_name: torch_results(name, config, mode, state, x, dy, torch_dtype)
            for dtype_name, (_, torch_dtype) in DTYPES.items()
        }
        errors = errors_against(results["float64"], results["float32"], scale_key(mode))
        if max(errors.values()) > MAX_FLOAT32_ERROR or has_zero_tensor(results["float64"], mode):
            continue
        moves = sensitivity(
            # results_of(rounding): the float64 reference of this problem
            partial(torch_results, name, config, mode, state, x, dy, torch.float64),
            UNIT_ROUNDOFF[np.dtype(np.float32)],
            scale_key(mode),
        )
        if max(moves.values()) <= MAX_SENSITIVITY:
            break
    else:
        raise RuntimeError(f"{stem} ({mode}): no suitable seed in {MAX_ATTEMPTS} attempts")

    fixtures = {}
    for dtype_name, (np_dtype, _) in DTYPES.items():
        check_results(stem, results[dtype_name], np_dtype)

        def cast(value, np_dtype=np_dtype):
            return value if np.issubdtype(value.dtype, np.integer) else value.astype(np_dtype)

        fixtures[f"{stem}_{mode}_{dtype_name}.npz"] = {
            "module": np.array(name),  # 0-d fixed-width str_, no pickle
            **{f"config/{arg}": np.array(value) for arg, value in config.items()},
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
    """Regenerate every fixture of BAM and its new layers and print their names, seeds and
    sizes."""
    torch.set_num_threads(1)
    # compute everything first: a failed check leaves the existing fixtures untouched
    fixtures = {}
    for stem, name, config, shape, modes, base_seed in CONFIGS:
        for index, mode in enumerate(modes):
            fixtures.update(make_fixtures(stem, name, config, shape, base_seed + 50 * index, mode))
    replace_fixtures(FIXTURE_DIR, fixtures, torch.__version__)


if __name__ == "__main__":
    main()
