"""How many threads NumPy's BLAS uses, and a way to fix that number for a while.

Why it matters: OpenBLAS splits a matrix product between its threads, and how it splits decides
which micro-kernel computes which entries and in what order a long sum is added up. The float32
products of a training step therefore round differently with one thread than with two, and a
seeded training run drifts apart after a few steps (measured here with NumPy 2.4's OpenBLAS
0.3.31: every float32 ``@`` of the demo classifier's convolutions, and the float64 one of the
spatial convolution's weight gradient, whose single output channel makes it a matrix-vector
product). Running the products on a fixed number of threads makes the result independent of the
environment (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, the number of cores).

NumPy has no public call for this, so the OpenBLAS that NumPy loaded is found and asked
directly (``openblas_get_num_threads`` / ``openblas_set_num_threads``, under the names NumPy's
wheels give them); the same approach as the ``threadpoolctl`` package, which is not a
dependency. Another BLAS (MKL, Apple's Accelerate) is not controlled: :func:`blas_threads`
returns None there.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# the symbol prefixes and suffixes of OpenBLAS builds: NumPy >= 2.0 wheels (scipy-openblas,
# 64-bit integers), NumPy 1.x wheels (64-bit integers), and a plain system OpenBLAS
_PREFIXES = ("scipy_openblas", "openblas")
_SUFFIXES = ("64_", "")


def _loaded_openblas_paths() -> list[str]:
    """Paths of the OpenBLAS libraries in this process (Linux), else those NumPy's wheels ship."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        numpy_dir = Path(np.__file__).parent
        folders = (numpy_dir.parent / "numpy.libs", numpy_dir / ".dylibs")
        paths = {str(path) for folder in folders for path in folder.glob("*openblas*")}
    return sorted(path for path in paths if Path(path).is_file())


def _openblas_functions() -> tuple[object, object] | None:
    """(get_num_threads, set_num_threads) of NumPy's OpenBLAS, or None when there is none."""
    np.ones((2, 2)) @ np.ones((2, 2))  # make sure NumPy has loaded its BLAS
    for path in _loaded_openblas_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in _PREFIXES:
            for suffix in _SUFFIXES:
                get = getattr(library, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(library, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    get.restype, set_.restype = ctypes.c_int, None
                    set_.argtypes = [ctypes.c_int]
                    return get, set_
    return None


def blas_threads() -> int | None:
    """The number of threads NumPy's OpenBLAS uses now, or None if it cannot be found."""
    functions = _openblas_functions()
    return None if functions is None else int(functions[0]())


@contextlib.contextmanager
def fixed_blas_threads(threads: int | None) -> Iterator[int | None]:
    """Run the block with NumPy's OpenBLAS on ``threads`` threads, then restore the number.

    ``threads=None`` changes nothing. Yields the number of threads in effect inside the block
    (None when it cannot be found or set).
    """
    functions = None if threads is None else _openblas_functions()
    if functions is None:
        yield blas_threads() if threads is None else None
        return
    get, set_ = functions
    before = int(get())
    set_(threads)
    try:
        yield int(get())
    finally:
        set_(before)
