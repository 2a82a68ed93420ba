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


# --- Gradescope's results.json ------------------------------------------------------------
#
# The format, as documented in "Autograder Specifications", section "Output format"
# (https://gradescope-autograders.readthedocs.io/en/latest/specs/, the page's source being
# docs/specs.md in github.com/gradescope/autograder_samples): a JSON object with an optional
# top-level "score" (a number; required when no test carries a score), "execution_time"
# (seconds), "output" (text for the whole submission), "output_format" (one of "text",
# "simple_format", "html", "md", "ansi"), "visibility", "stdout_visibility" ("hidden",
# "after_due_date", "after_published", "visible"), "extra_data", and "tests", a list of objects
# each with optional "score" and "max_score" (numbers), "status" ("passed" or "failed"),
# "name", "name_format", "number" (a string such as "1.1"), "output", "output_format",
# "tags" (a list of strings), "visibility" and "extra_data". Nothing else is defined.

FORMATS = {"text", "simple_format", "html", "md", "ansi"}
VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}
NUMBER = (int, float)
TOP_LEVEL = {
    "score": NUMBER,
    "execution_time": NUMBER,
    "output": str,
    "output_format": str,
    "test_output_format": str,
    "test_name_format": str,
    "visibility": str,
    "stdout_visibility": str,
    "extra_data": dict,
    "tests": list,
    "leaderboard": list,
}
TEST_FIELDS = {
    "score": NUMBER,
    "max_score": NUMBER,
    "status": str,
    "name": str,
    "name_format": str,
    "number": str,
    "output": str,
    "output_format": str,
    "tags": list,
    "visibility": str,
    "extra_data": dict,
}


def gradescope_problems(results) -> list[str]:
    """Every way ``results`` departs from the documented format (empty when it conforms)."""
    problems = []

    def check_fields(obj, allowed: dict, where: str) -> None:
        for key, value in obj.items():
            if key not in allowed:
                problems.append(f"{where}: unknown field {key!r}")
            elif isinstance(value, bool) or not isinstance(value, allowed[key]):
                problems.append(f"{where}: {key} is a {type(value).__name__}")
        for key in ("output_format", "test_output_format", "test_name_format", "name_format"):
            if isinstance(obj.get(key), str) and obj[key] not in FORMATS:
                problems.append(f"{where}: {key} {obj[key]!r} is not a format")
        for key in ("visibility", "stdout_visibility"):
            if isinstance(obj.get(key), str) and obj[key] not in VISIBILITIES:
                problems.append(f"{where}: {key} {obj[key]!r} is not a visibility")

    if not isinstance(results, dict):
        return ["the results are not a JSON object"]
    check_fields(results, TOP_LEVEL, "top level")
    tests = results.get("tests", [])
    # informational tests may go without a score (the documentation's "Test case status")
    if "score" not in results and not any(isinstance(t, dict) and "score" in t for t in tests):
        problems.append("no score, neither at the top level nor on a test")
    for k, test in enumerate(tests if isinstance(tests, list) else []):
        if not isinstance(test, dict):
            problems.append(f"tests[{k}] is not an object")
            continue
        check_fields(test, TEST_FIELDS, f"tests[{k}]")
        if test.get("status") not in (None, "passed", "failed"):
            problems.append(f"tests[{k}]: status {test['status']!r}")
        if not all(isinstance(tag, str) for tag in test.get("tags", [])):
            problems.append(f"tests[{k}]: a tag that is not a string")
    return problems


def assert_gradescope_results(results) -> None:
    """The documented format, and what npcbam promises on top of it: every test has a name,
    number, score, max_score, status and output, and the top-level score is their total."""
    assert gradescope_problems(results) == []
    for test in results["tests"]:
        assert {"name", "number", "score", "max_score", "status", "output"} <= set(test)
        assert 0 <= test["score"] <= test["max_score"]
        assert test["status"] == ("passed" if test["score"] == test["max_score"] else "failed")
    assert results["score"] == sum(test["score"] for test in results["tests"])
    assert isinstance(results["execution_time"], NUMBER) and results["execution_time"] >= 0
