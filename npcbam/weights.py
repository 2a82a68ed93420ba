"""Saving and loading a module's state dict as ``.npz``, never through pickle."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from npcbam.nn.module import Module

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip
NPY_SIGNATURE = b"\x93NUMPY"
# what reading a damaged archive raises, from zipfile, zlib and numpy.lib.format
_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    ValueError,
    OSError,
    NotImplementedError,
    RuntimeError,
)


def save_weights(module: Module, path) -> Path:
    """Write ``module.state_dict()`` (parameters and buffers) to an uncompressed ``.npz``.

    Returns the path written (NumPy appends ``.npz`` when missing).
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    np.savez(path, **module.state_dict())
    return path


def read_weights(path) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` archive by name, read with ``allow_pickle=False``.

    Raises
    ------
    OSError
        When the file cannot be opened (``FileNotFoundError``, ``IsADirectoryError``, ...).
    ValueError
        For anything wrong with its content, naming the path and the problem: an empty file, a
        single ``.npy`` array, a file that is not a zip archive (plain text, a pickle), a
        truncated or corrupt archive, a member that is not a NumPy array, or one holding
        Python objects (which would need unpickling: refused).
    """
    path = Path(path)
    with open(path, "rb") as file:
        start = file.read(len(NPY_SIGNATURE))
        if not start:
            raise ValueError(f"cannot load weights from {path}: the file is empty")
        if start == NPY_SIGNATURE:
            raise ValueError(
                f"cannot load weights from {path}: it is a single .npy array, not an .npz "
                "archive of named arrays (write one with npcbam.save_weights)"
            )
        if start[:4] not in ZIP_SIGNATURES:
            raise ValueError(
                f"cannot load weights from {path}: not an .npz archive (it does not start "
                f"with a zip signature; first bytes {start!r})"
            )
        file.seek(0)
        try:
            with np.load(file, allow_pickle=False) as archive:
                state = {name: archive[name] for name in archive.files}
        except _READ_ERRORS as error:
            raise ValueError(
                f"cannot load weights from {path}: the archive is damaged or holds something "
                f"other than plain arrays ({type(error).__name__}: {error})"
            ) from error
    not_arrays = sorted(name for name, value in state.items() if not isinstance(value, np.ndarray))
    if not_arrays:
        raise ValueError(
            f"cannot load weights from {path}: member(s) {not_arrays} are not .npy arrays"
        )
    return state


def load_weights(module: Module, path) -> None:
    """Load a ``.npz`` written by :func:`save_weights` into ``module``.

    The archive is opened with ``allow_pickle=False``: an archive holding Python objects is
    refused instead of executing them. A file that cannot be read as such an archive raises
    one ``ValueError`` naming the path and the problem (:func:`read_weights`); keys and shapes
    are checked by :meth:`~npcbam.nn.module.Module.load_state_dict`. On any problem nothing
    is changed.
    """
    module.load_state_dict(read_weights(path))
