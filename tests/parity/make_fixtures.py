"""Write the PyTorch parity fixtures of ``tests/test_parity_fixtures.py`` (needs torch).

Run ``python tests/parity/make_fixtures.py`` from any directory: it replaces every ``.npz`` in
``tests/parity/fixtures/`` with fresh ones. Each fixture holds an input ``x``, an upstream
gradient ``dy``, the three weights under their state-dict names, PyTorch's ``y``, ``dx`` and
``grad/<name>``, the configuration (``channels``, ``reduction``, ``kernel_size``) and
``torch_version``. Data come from fixed seeds and the archives carry no timestamps, so a rerun
with the same PyTorch writes identical bytes.

Every fixture but the ``ties`` one is checked to stay away from kinks (near-ties of a max,
pre-activations near zero), so a float32 rounding difference cannot flip a winner, and every
float32 one to be well-conditioned (no gradient that nearly cancels). The ``ties``
fixture holds exact ties on purpose: within a channel's global spatial maximum and across
channels at some positions; PyTorch routes the gradient to the first maximal index.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for helpers
from fixture_io import write_npz
from helpers import kink_margin
from torch_reference import float32_rounding_error, torch_gradients

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures"
MIN_MARGIN = 1e-3  # distance from any kink for the random fixtures (inputs are of order 1)
# float32 fixtures must be well-conditioned: PyTorch's float32 error (against float64) stays
# under a tenth of the test's 1e-5, so any accurate float32 implementation passes
MAX_FLOAT32_ERROR = 1e-6

# (name, (N, C, H, W), reduction, kernel_size, seed)
CONFIGS = [
    ("cbam_n2_c16_h7_w5_r4_k7", (2, 16, 7, 5), 4, 7, 11),
    ("cbam_n1_c4_h3_w3_r4_k3", (1, 4, 3, 3), 4, 3, 17),  # hidden width 1
    ("cbam_n2_c8_h6_w9_r2_k5", (2, 8, 6, 9), 2, 5, 13),
    ("cbam_n3_c6_h1_w1_r3_k1", (3, 6, 1, 1), 3, 1, 14),  # one pixel, 1×1 spatial conv
]
TIES_CONFIG = ("ties_n2_c6_h5_w4_r2_k3", (2, 6, 5, 4), 2, 3, 15)
DTYPES = {"float64": (np.float64, torch.float64), "float32": (np.float32, torch.float32)}


def random_weights(rng: np.random.Generator, channels: int, reduction: int, kernel_size: int):
    """Normal weights scaled by 1/sqrt(fan_in), keyed and shaped as the seed's state dict."""
    hidden = channels // reduction
    return {
        "mlp.0.weight": rng.standard_normal((hidden, channels, 1, 1)) / np.sqrt(channels),
        "mlp.2.weight": rng.standard_normal((channels, hidden, 1, 1)) / np.sqrt(hidden),
        "conv.weight": rng.standard_normal((1, 2, kernel_size, kernel_size))
        / np.sqrt(2 * kernel_size**2),
    }


def tied_input(rng: np.random.Generator, shape) -> np.ndarray:
    """An input of shape (2, 6, 5, 4) with exact ties in both kinds of max.

    Global spatial maximum (per channel, over H×W): sample 0 channel 1 peaks at two positions,
    sample 1 channel 4 at three, and sample 1 channel 0 is zero everywhere (all 20 tie).
    Channel maximum (per position, over C): zeros that beat only negative entries stay tied
    after any positive channel gate, at (0, :, 2, 1) (channels 1, 3, 5), (0, :, 4, 3)
    (channels 3, 5) and (1, :, 3, 2) (all six channels).
    """
    if tuple(shape) != (2, 6, 5, 4):
        raise ValueError(f"the hand-made ties need shape (2, 6, 5, 4), not {shape}")
    x = rng.uniform(-2.0, 2.0, size=shape)
    x[0, 1, 1, 2] = x[0, 1, 3, 0] = 2.5
    x[1, 4, 0, 3] = x[1, 4, 2, 1] = x[1, 4, 4, 3] = 2.5
    x[1, 0] = 0.0
    x[0, :, 2, 1] = [-1.3, 0.0, -0.4, 0.0, -2.0, 0.0]
    x[0, :, 4, 3] = [-0.5, -0.2, -0.9, 0.0, -1.1, 0.0]
    x[1, :, 3, 2] = 0.0
    return x


def make_fixture(config, dtype_name: str, ties: bool = False) -> dict[str, np.ndarray]:
    """Draw the data of one configuration and compute PyTorch's outputs and gradients."""
    _, shape, reduction, kernel_size, seed = config
    np_dtype, torch_dtype = DTYPES[dtype_name]
    rng = np.random.default_rng(seed)
    weights = random_weights(rng, shape[1], reduction, kernel_size)
    x = tied_input(rng, shape) if ties else rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    x, dy = x.astype(np_dtype), dy.astype(np_dtype)
    weights = {name: w.astype(np_dtype) for name, w in weights.items()}
    if np.unique(dy).size != dy.size:
        raise RuntimeError(f"{config[0]}: dy has repeated entries; pick another seed")

    result = torch_gradients(x, dy, weights, torch_dtype)
    refined = result.pop("refined")
    if not ties and kink_margin(x, refined, weights["mlp.0.weight"]) < MIN_MARGIN:
        raise RuntimeError(f"{config[0]} ({dtype_name}): data too close to a kink; new seed")
    if np_dtype == np.float32 and float32_rounding_error(x, dy, weights) > MAX_FLOAT32_ERROR:
        raise RuntimeError(f"{config[0]}: ill-conditioned in float32; pick another seed")
    for name, value in result.items():
        if value.dtype != np_dtype or not np.abs(value).max() > 0:
            raise RuntimeError(f"{config[0]} ({dtype_name}): {name} is all zero or mistyped")
    return {
        "x": x,
        "dy": dy,
        **weights,
        **result,
        "channels": np.array(shape[1]),
        "reduction": np.array(reduction),
        "kernel_size": np.array(kernel_size),
        "torch_version": np.array(str(torch.__version__)),  # 0-d fixed-width str_, no pickle
    }


def main() -> None:
    """Regenerate every fixture and print their names and sizes."""
    torch.set_num_threads(1)
    jobs = [(config, dtype, False) for config in CONFIGS for dtype in DTYPES]
    jobs.append((TIES_CONFIG, "float64", True))
    # compute everything first: a failed check leaves the existing fixtures untouched
    fixtures = {
        f"{config[0]}_{dtype_name}.npz": make_fixture(config, dtype_name, ties)
        for config, dtype_name, ties in jobs
    }
    FIXTURE_DIR.mkdir(exist_ok=True)
    for stale in FIXTURE_DIR.glob("*.npz"):
        stale.unlink()
    total = 0
    for name, arrays in fixtures.items():
        path = FIXTURE_DIR / name
        write_npz(path, arrays)
        total += path.stat().st_size
        print(f"{name:40s} {path.stat().st_size:7d} bytes")
    print(f"{'total':40s} {total:7d} bytes (torch {torch.__version__})")


if __name__ == "__main__":
    main()
