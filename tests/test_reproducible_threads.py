"""A seeded training run gives the same model bit for bit whatever the BLAS thread count.

Each run is a fresh process whose environment asks OpenBLAS for 1 or 2 threads (the thread pool
is sized when NumPy loads, so this cannot be changed within one process). Without a fixed
thread count during training, OpenBLAS splits the float32 products differently and the two
runs' weights differ after the first step.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npcbam._blas import blas_threads, fixed_blas_threads
from npcbam.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHORT_RUN = ["--n-train", "128", "--n-test", "16", "--batch-size", "64", "--epochs", "1"]

needs_openblas = pytest.mark.skipif(
    blas_threads() is None, reason="NumPy's BLAS is not OpenBLAS: its threads cannot be set"
)


def train_in_subprocess(tmp_path: Path, threads: int, *options: str) -> tuple[dict, Path]:
    """``python -m npcbam train`` of a short run with ``threads`` BLAS threads in the
    environment; the JSON summary and the weights' path."""
    out = tmp_path / f"threads-{threads}{''.join(options)}.npz"
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "OPENBLAS_NUM_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
    }
    result = subprocess.run(
        [sys.executable, "-m", "npcbam", "train", *SHORT_RUN, *options, "--json", "--out", out],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1]), out


def weights(path: Path) -> dict[str, bytes]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name].tobytes() for name in archive.files}


@needs_openblas
def test_seeded_training_is_bit_identical_with_one_and_two_threads(tmp_path):
    one, one_path = train_in_subprocess(tmp_path, 1)
    two, two_path = train_in_subprocess(tmp_path, 2)
    assert one["blas_threads"] == two["blas_threads"] == 1  # the default: one thread
    assert one["history"][-1]["loss"] == two["history"][-1]["loss"]
    assert weights(one_path) == weights(two_path)


@needs_openblas
def test_the_environment_thread_count_is_reported_when_kept(tmp_path):
    """--blas-threads 0 keeps the environment's setting, and the JSON says which it was."""
    kept, _ = train_in_subprocess(tmp_path, 2, "--blas-threads", "0")
    assert kept["blas_threads"] == 2
    assert kept["config"]["blas_threads"] is None


@needs_openblas
def test_fixed_blas_threads_restores_the_count():
    before = blas_threads()
    with fixed_blas_threads(1) as inside:
        assert inside == blas_threads() == 1
    assert blas_threads() == before
    with fixed_blas_threads(None) as kept:
        assert kept == before


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_blas_threads_must_be_a_positive_integer_or_none(value):
    with pytest.raises((TypeError, ValueError), match="blas_threads"):
        TrainConfig(blas_threads=value)
