"""Comparing a student's outputs with the reference, and saying what is wrong in words.

Everything here is pure: arrays in, verdicts and sentences out. The notation is the
notebooks': the gradient of ``t`` is written t̄ (``dt`` in code), shapes (N, C, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npcbam.exercises.registry import ATOL_FACTOR, RTOL
from npcbam.exercises.runner import Foreign

TOLERANCE_TEXT = f"|got − expected| ≤ {ATOL_FACTOR:g}·max(1, max|expected|) + {RTOL:g}·|expected|"


def as_outputs(value, count: int):
    """A returned value as a tuple of ``count`` items, or None if it has another structure.

    A function with one output may return the array itself or a 1-tuple."""
    if count == 1 and not isinstance(value, tuple):
        return (value,)
    if isinstance(value, tuple) and len(value) == count:
        return value
    return None


def describe_structure(value) -> str:
    """A few words on what was returned: "an array of shape (2, 3)", "a tuple of 2 items"."""
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(value)}"
    if isinstance(value, Foreign):
        return f"a {value.type_name} ({value.text})"
    return type(value).__name__


@dataclass(frozen=True)
class Mismatch:
    """How one returned array differs from the expected one (None fields when not applicable)."""

    problem: str  # "type", "shape", "dtype", "values"
    text: str  # one sentence
    index: tuple[int, ...] | None = None
    expected: float | None = None
    got: float | None = None
    wrong: int = 0  # entries outside the tolerance
    total: int = 0
    label: str = ""  # which output, e.g. "x̄ (dx)"


def scale_of(expected: np.ndarray) -> float:
    """The absolute tolerance's scale: max(1, max|expected|)."""
    finite = np.abs(expected[np.isfinite(expected)]) if expected.size else np.zeros(0)
    return float(max(1.0, finite.max(initial=0.0)))


def close(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Element-wise: within the tolerance (see ``TOLERANCE_TEXT``)."""
    with np.errstate(all="ignore"):
        diff = np.abs(got.astype(np.float64) - expected)
        return diff <= ATOL_FACTOR * scale_of(expected) + RTOL * np.abs(expected)


def compare_array(got, expected: np.ndarray, label: str) -> Mismatch | None:
    """None if ``got`` is a float64 array of ``expected``'s shape within the tolerance; else
    what is wrong with it, first things first (type, shape, dtype, values)."""
    if not isinstance(got, np.ndarray):
        return Mismatch("type", f"{label} is {describe_structure(got)}, not an array", label=label)
    if got.shape != expected.shape:
        text = f"{label} has shape {got.shape}; expected {expected.shape}"
        return Mismatch("shape", text, label=label)
    if got.dtype != np.float64:
        return Mismatch(
            "dtype",
            f"{label} has dtype {got.dtype}; expected float64 (the inputs' dtype: start from "
            f"np.zeros_like of a float input, or np.zeros(shape) which is float64)",
            label=label,
        )
    ok = close(got, expected)
    if ok.all():
        return None
    with np.errstate(all="ignore"):
        diff = np.where(ok, 0.0, np.abs(got - expected))
    diff = np.where(np.isnan(diff), np.inf, diff)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    wrong, total = int((~ok).sum()), int(ok.size)
    return Mismatch(
        "values",
        f"{label}: {wrong} of {total} entries differ",
        tuple(int(i) for i in worst),
        float(expected[worst]),
        float(got[worst]),
        wrong,
        total,
        label,
    )


def worst_error(got: np.ndarray, expected: np.ndarray) -> float:
    """max|got − expected| / max(1, max|expected|), for the PASS line."""
    if expected.size == 0:
        return 0.0
    return float(np.abs(got - expected).max() / scale_of(expected))


def outputs_match(returned, expected: tuple) -> bool:
    """Same structure, shapes and float64 values within the tolerance, every output."""
    outputs = as_outputs(returned, len(expected))
    if outputs is None:
        return False
    return all(compare_array(g, e, "") is None for g, e in zip(outputs, expected))


def format_number(value: float) -> str:
    return f"{value + 0.0:.7g}"  # -0.0 shown as 0


def format_index(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def location_line(mismatch: Mismatch, case_label: str) -> str:
    """One line: which output, on which case, where, expected and got."""
    if mismatch.problem != "values":
        return f"{mismatch.text} (case {case_label!r})"
    where = format_index(mismatch.index) if mismatch.index else "the scalar"
    return (
        f"{mismatch.text} on case {case_label!r}; the worst at {where}: expected "
        f"{format_number(mismatch.expected)}, got {format_number(mismatch.got)}"
    )


def reading_line(theory: str, reading: str) -> str:
    return f"Read: {theory} and the reading notebook {reading}."
