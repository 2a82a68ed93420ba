"""Input checks shared by modules and ops: each raises an error that names the bad value."""

from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def require_float_array(x, name: str) -> np.ndarray:
    """Return ``x`` as an ndarray, raising ``TypeError`` unless it is float32 or float64."""
    x = np.asarray(x)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} has dtype {x.dtype}; expected float32 or float64 "
            f"(convert with {name}.astype(np.float32) or np.float64)"
        )
    return x


def require_ndim(x: np.ndarray, ndim: int, name: str, layout: str) -> None:
    """Raise ``ValueError`` unless ``x`` has ``ndim`` dimensions (``layout`` names them)."""
    if x.ndim != ndim:
        raise ValueError(f"{name} has shape {x.shape} ({x.ndim}-D); expected {ndim}-D {layout}")


def require_finite(x: np.ndarray, name: str, summary: np.ndarray | None = None) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or infinity, naming how many and the first index.

    ``summary`` is an optional small array already computed from ``x`` that is non-finite
    whenever ``x`` is (a mean over some axes, a product summed with finite values): when it is
    finite, the check costs nothing more; otherwise (or without it) every element is tested.
    A finite ``x`` whose summary overflowed passes.
    """
    if summary is not None and np.isfinite(summary).all():
        return
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} holds {int(bad.sum())} non-finite value(s) (first at index {first}: "
            f"{x[first]}); npcbam expects finite inputs and does not propagate NaN or inf"
        )


def require_int(value, name: str, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as an int, raising unless it is an integer >= ``minimum`` (and, if
    given, <= ``maximum``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def require_bool(value, name: str) -> bool:
    """Return ``value`` if it is a bool (or NumPy bool), raising ``TypeError`` otherwise: a
    flag taken by truthiness would read ``"no"`` or ``"False"`` as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def require_odd_kernel(kernel_size, name: str = "kernel_size") -> int:
    """Return ``kernel_size`` as an int, raising unless it is a positive odd integer."""
    k = require_int(kernel_size, name, 1)
    if k % 2 == 0:
        raise ValueError(
            f"{name}={k} is even; 'same' padding (k // 2 on each side) needs an odd kernel "
            f"such as {k - 1} or {k + 1}"
        )
    return k
