"""Keep the memory NumPy frees inside the process, for programs that run many training steps.

Why it matters: a training step allocates and frees arrays of a few megabytes each, in a
pattern that repeats every step. With its default settings, glibc's ``malloc`` gives memory
freed at the top of its heap back to the operating system once more than about 128 KiB is
free there (and serves large requests with fresh ``mmap`` pages), and the next step takes it
back page by page, one page fault per 4 KiB. In the virtual machine npcbam's figures were
measured on, that cost up to half of a convolution's forward (7.6 ms against 2.8 ms for a 3×3
layer on 16 channels of 64 images of 24×24, the same product) and about a tenth of the demo
classifier's training step, depending on the order of the allocations.

:func:`keep_freed_memory` raises both thresholds (``mallopt(M_TRIM_THRESHOLD)`` and
``mallopt(M_MMAP_THRESHOLD)``) so that freed memory stays in the heap for the next step. It is
a setting of the whole process, never undone (glibc has no way to return to its adaptive
defaults), so the library never calls it on its own: the programs that train do
(``npcbam train``, ``npcbam gradcheck``, the benchmarks; they say so in their output), and a
user's script may. The price is that the process keeps its peak heap until it exits. Where
``malloc`` is not glibc's (macOS, Windows, musl) it does nothing and returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 2**30  # free memory at the top of the heap kept up to 1 GiB
MMAP_THRESHOLD = 2**25  # requests up to 32 MiB (glibc's largest) served from the heap

_kept = False


def keep_freed_memory() -> bool:
    """Ask glibc's ``malloc`` to keep freed memory in the process (module docstring).

    Returns True if the setting is in effect (now or from an earlier call), False where the C
    library is not glibc.
    """
    global _kept
    if _kept:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _kept


def memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` is in effect in this process."""
    return _kept
