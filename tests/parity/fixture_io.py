"""Writing parity fixtures: ``.npz`` archives whose bytes depend only on their arrays."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry timestamps: reproducible bytes


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save ``arrays`` as a deflated ``.npz`` with fixed timestamps (reproducible bytes),
    never pickling (object arrays are refused)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, buffer.getvalue())


def replace_fixtures(folder: Path, fixtures: dict[str, dict[str, np.ndarray]], version: str):
    """Delete every ``.npz`` in ``folder``, write ``fixtures`` (file name -> arrays) there, and
    print each file's size (and its ``seed``, when it holds one) and the total."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.npz"):
        stale.unlink()
    width, total = max(len(name) for name in fixtures) + 2, 0
    for name, arrays in fixtures.items():
        path = folder / name
        write_npz(path, arrays)
        total += path.stat().st_size
        seed = f"seed {int(arrays['seed']):5d} " if "seed" in arrays else ""
        print(f"{name:{width}s} {seed}{path.stat().st_size:8d} bytes")
    print(f"{'total':{width}s} {total:8d} bytes (torch {version})")
