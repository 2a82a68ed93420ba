"""npcbam._malloc: the programs that train keep freed memory in the process (glibc)."""

import ctypes.util
import platform

import pytest

from npcbam import _malloc


def test_keep_freed_memory_is_idempotent_and_reported():
    kept = _malloc.keep_freed_memory()
    assert _malloc.memory_kept() is kept
    assert _malloc.keep_freed_memory() is kept  # a second call changes nothing


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)
def test_glibc_takes_the_setting():
    assert ctypes.util.find_library("c")
    assert _malloc.keep_freed_memory() is True

