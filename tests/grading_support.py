"""Submissions written by the grading tests, and a tiny registry to grade them on.

The tiny registry has the shape of :data:`npcbam.exercises.EXERCISES` (name, title, points,
notebook, functions) and its own ``evaluate``: every case's output compared with a reference
computed in the test's process, so these tests exercise the grader's process handling on
their own, quickly. Tests of the real exercises are in ``test_grade.py``.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from npcbam.exercises.runner import MISSING, NOT_ATTEMPTED


@dataclass(frozen=True)
class TinyExercise:
    name: str
    title: str
    points: int
    notebook: str
    function: str
    reference: Callable
    arguments: Callable  # () -> list of argument tuples

    @property
    def functions(self) -> tuple[str, ...]:
        return (self.function,)


def _arrays():
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((2, 3)),), (rng.standard_normal((4, 1, 2)),)]


def _relu_cases():
    rng = np.random.default_rng(1)
    return [(rng.standard_normal((3, 4)), rng.standard_normal((3, 4))) for _ in range(2)]


TINY = {
    exercise.name: exercise
    for exercise in (
        TinyExercise("double", "Twice x", 1, "exA_basics", "double", lambda x: 2 * x, _arrays),
        TinyExercise(
            "relu",
            "ReLU backward",
            2,
            "exA_basics",
            "relu_backward",
            lambda dh, p: dh * (p > 0),
            _relu_cases,
        ),
        TinyExercise("square", "Square of x", 3, "exB_more", "square", lambda x: x * x, _arrays),
    )
}


def tiny_evaluate(name: str, runner) -> SimpleNamespace:
    """Compare the submission's function with the reference on every case."""
    exercise = TINY[name]
    arguments = exercise.arguments()
    expected = [exercise.reference(*args) for args in arguments]  # before the student's code
    calls = runner.run(exercise.function, arguments)
    failures = [call.failure for call in calls]
    lines = []
    if all(f == NOT_ATTEMPTED for f in failures):
        status = "not attempted"
    elif all(f == MISSING for f in failures):
        status = "missing"
    else:
        status = "passed"
        for k, (call, want) in enumerate(zip(calls, expected)):
            if call.failure:
                status = "failed"
                lines.append(f"case {k}: {call.failure}: {call.message}")
            elif call.modified:
                status = "failed"
                lines.append(f"case {k}: modified argument(s) {call.modified} in place")
            elif not (
                isinstance(call.returned, np.ndarray)
                and call.returned.shape == want.shape
                and np.allclose(call.returned, want, rtol=1e-12, atol=1e-12)
            ):
                status = "failed"
                lines.append(f"case {k}: wrong output {call.returned!r}")
    if status != "passed":
        lines += [f"  {call.failure}: {call.message}" for call in calls if call.failure][:1]
    head = f"{status.upper()} {name}"
    return SimpleNamespace(
        name=name,
        title=exercise.title,
        points=exercise.points,
        score=exercise.points if status == "passed" else 0,
        status=status,
        report="\n".join([head, *lines]),
    )


CORRECT = """
def double(x):
    return 2 * x

def relu_backward(dh, p):
    return dh * (p > 0)

def square(x):
    return x * x
"""


def write_py(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def write_notebook(directory: Path, name: str, cells: list[str]) -> Path:
    """An nbformat-4 notebook of code cells (and one markdown cell, which is ignored)."""
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# Exercises\n"]}]
        + [
            {
                "cell_type": "code",
                "execution_count": None,
                "metadata": {},
                "outputs": [],
                "source": textwrap.dedent(source).strip("\n").splitlines(keepends=True),
            }
            for source in cells
        ],
    }
    path = directory / name
    path.write_text(json.dumps(notebook), encoding="utf-8")
    return path
