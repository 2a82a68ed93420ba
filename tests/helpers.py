"""Shared test helpers: the public machinery of :mod:`npcbam.testing` under the names the suite
uses, plus two margins specific to CBAM's shared MLP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from npcbam import testing
from npcbam.gradcheck import distinct_values
from npcbam.testing import MAX_REL_ERR, SAFE_MARGIN, relative_error, top2_gap
from npcbam.testing import assert_report as assert_gradients_match

__all__ = [
    "EXACT",
    "MAX_REL_ERR",
    "SAFE_MARGIN",
    "assert_gradients_match",
    "distinct_values",
    "kink_margin",
    "relative_error",
    "relu_margin",
    "run_benchmark",
    "seeds",
    "smallest_batch_std",
    "top2_gap",
]

# A train-mode BatchNorm over a few nearly equal values is smooth but steep: its k-th
# derivative grows like 1/std^k, so an order-4 difference errs by about h^4/std^5 (3e-4 was
# measured at std ~ 4e-3 over two values, 4e-6 in a whole backbone). Like a kink, such an input
# is kept out of a finite-difference test (``assume``), never met with a looser tolerance.
MIN_BATCH_STD = 0.05

EXACT = {"rtol": 1e-12, "atol": 1e-12}  # vectorized op vs its loop oracle, both float64

seeds = testing.seeds()


def relu_margin(x: np.ndarray, w_hidden: np.ndarray) -> float:
    """Smallest |pre-activation| of CBAM's shared-MLP ReLU, over the average- and the
    max-pooled branch (:func:`npcbam.testing.relu_margin` of both).

    ``x`` is (N, C, H, W), ``w_hidden`` the ``mlp.0.weight`` (C/r, C, 1, 1).
    """
    n, c = x.shape[:2]
    pooled = np.concatenate([x.mean(axis=(2, 3)), x.reshape(n, c, -1).max(axis=2)])  # (2N, C)
    return testing.relu_margin(pooled @ w_hidden.reshape(-1, c).T)  # (2N, C/r)


def kink_margin(x: np.ndarray, refined: np.ndarray, w_hidden: np.ndarray) -> float:
    """How far CBAM's input is from every kink it meets: the global spatial max's top-2 gap on
    ``x``, the channel max's top-2 gap on ``refined`` (the channel-gated map, which is what
    spatial attention maxes), and :func:`relu_margin`."""
    maxima = [(x, (2, 3)), (refined, 1)]
    return min(testing.kink_margin(maxima=maxima), relu_margin(x, w_hidden))


def smallest_batch_std(module) -> float:
    """The smallest batch standard deviation, sqrt(var + eps), over every BatchNorm of
    ``module`` that normalised by batch statistics in its last forward (inf if none did)."""
    smallest = float("inf")
    for _, layer in module.named_modules():
        cache = getattr(layer, "_cache", None)
        if getattr(cache, "batch_statistics", False):
            smallest = min(smallest, float(1 / np.max(cache.inv_std)))
    return smallest


REPO = Path(__file__).resolve().parents[1]


def run_benchmark(name: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<name>`` with ``args`` in a subprocess, on the package of this checkout
    (installed or not), and return the completed process (its text output captured)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    script = REPO / "benchmarks" / name
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, check=False, env=env
    )
