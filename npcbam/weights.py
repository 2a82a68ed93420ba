"""Saving and loading a module's state dict as ``.npz``, never through pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from npcbam.nn.module import Module


def save_weights(module: Module, path) -> Path:
    """Write ``module.state_dict()`` (parameters and buffers) to an uncompressed ``.npz``.

    Returns the path written (NumPy appends ``.npz`` when missing).
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    np.savez(path, **module.state_dict())
    return path


def load_weights(module: Module, path) -> None:
    """Load a ``.npz`` written by :func:`save_weights` into ``module``.

    The archive is opened with ``allow_pickle=False``: an archive holding Python objects is
    refused instead of executing them. Keys and shapes are checked by
    :meth:`~npcbam.nn.module.Module.load_state_dict`; on any problem nothing is changed.
    """
    with np.load(Path(path), allow_pickle=False) as archive:
        state = {name: archive[name] for name in archive.files}
    module.load_state_dict(state)
