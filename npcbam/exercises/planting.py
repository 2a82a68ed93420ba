"""Planting a bug: run npcbam's reference with one of its functions replaced.

A misconception in the catalogue is *the reference with one thing changed*. For a small op
the changed thing is a short function written out in the catalogue; for a module (channel
attention, CBAM) it is one of the ops the module calls, replaced while the reference runs:
the module itself is not copied, and the same wrong op serves every exercise built on it (the
average pool without its 1/(H·W) is a misconception of the pooling exercise *and* of channel
attention).

:func:`planted` replaces a function everywhere npcbam refers to it (in every loaded
``npcbam.*`` module that imported it) and puts the originals back afterwards, whatever
happens. It is for the checker's own reference runs, in one thread.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def planted(replacements: dict[str, Callable]) -> Iterator[None]:
    """Within the block, every npcbam module's attribute named like a key of
    ``replacements`` (and holding npcbam's original function of that name) is the replacement.

    The replacement receives the original as the keyword argument ``original`` when it
    declares one, so a wrong op can be written as "the right one, then one thing changed".
    """
    saved: list[tuple[object, str, object]] = []
    try:
        for name, replacement in replacements.items():
            original = _original(name)
            wrapped = _bind_original(replacement, original)
            for module in list(sys.modules.values()):
                if _is_npcbam(module) and getattr(module, name, None) is original:
                    saved.append((module, name, original))
                    setattr(module, name, wrapped)
        yield
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)


def _is_npcbam(module) -> bool:
    name = getattr(module, "__name__", "")
    return name == "npcbam" or name.startswith("npcbam.")


def _original(name: str) -> Callable:
    """npcbam's own function called ``name`` (defined in an ``npcbam.ops`` module)."""
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("npcbam.ops."):
            candidate = getattr(module, name, None)
            if callable(candidate) and getattr(candidate, "__module__", "") == module.__name__:
                return candidate
    raise LookupError(f"npcbam.ops defines no function named {name!r}")


def _bind_original(replacement: Callable, original: Callable) -> Callable:
    code = getattr(replacement, "__code__", None)
    if (
        code is None
        or "original" not in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    ):
        return replacement

    def bound(*args, **kwargs):
        return replacement(*args, original=original, **kwargs)

    return bound
