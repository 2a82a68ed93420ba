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
