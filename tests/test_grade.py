"""``npcbam grade`` on the real exercises (issue 11, acceptance 1): full marks on the instructor
notebooks written by ``npcbam exercises start --solutions``, 0 with "not attempted" on fresh
student notebooks, exit status 0 and no traceback either way; a classic bug diagnosed through
the grader's process; a submission that monkeypatches numpy and npcbam still fails."""

from __future__ import annotations

import importlib.util
import json

from grading_support import assert_gradescope_results, write_py

from npcbam.cli import main
from npcbam.exercises import EXERCISES

TOTAL = sum(exercise.points for exercise in EXERCISES.values())


def grade_notebooks(tmp_path_factory, capsys, solutions: bool) -> tuple[str, dict]:
    """Write the notebooks with ``npcbam exercises start``, grade them all with ``npcbam grade
    --json``; check what holds either way: exit status 0, no traceback, nothing on stderr, no
    cell that raises. The output and the JSON results."""
    directory = tmp_path_factory.mktemp("solutions" if solutions else "student")
    assert (
        main(["exercises", "start", str(directory), *(["--solutions"] if solutions else [])]) == 0
    )
    capsys.readouterr()
    out = directory / "results.json"
    status = main(["grade", *sorted(map(str, directory.glob("*.ipynb"))), "--json", str(out)])
    captured = capsys.readouterr()
    assert status == 0
    assert "Traceback" not in captured.out and captured.err == ""
    loading = [line for line in captured.out.splitlines() if line.startswith("  cell ")]
    if importlib.util.find_spec("matplotlib") is None:
        # without the nb extra a notebook loses its pictures, nothing else (see
        # test_grade_without_matplotlib.py)
        assert all("matplotlib" in line or "plt" in line for line in loading), loading
    else:
        assert "While loading" not in captured.out
    results = json.loads(out.read_text(encoding="utf-8"))
    assert_gradescope_results(results)
    return captured.out, results


def test_the_instructor_solutions_get_full_marks(tmp_path_factory, capsys):
    out, results = grade_notebooks(tmp_path_factory, capsys, solutions=True)
    assert out.rstrip().splitlines()[-2] == f"All 8 submissions: {TOTAL} of {TOTAL} points"
    # every exercise graded exactly once, on the notebook it belongs to, and passed
    assert [test["number"] for test in results["tests"]] == [
        str(k) for k in range(1, len(EXERCISES) + 1)
    ]
    for test, exercise in zip(results["tests"], EXERCISES.values()):
        assert test["name"] == f"{exercise.name}: {exercise.title} ({exercise.notebook}.ipynb)"
        assert (test["status"], test["score"]) == ("passed", exercise.points), test["output"]
    assert results["score"] == TOTAL


def test_fresh_student_notebooks_get_0_and_not_attempted(tmp_path_factory, capsys):
    out, results = grade_notebooks(tmp_path_factory, capsys, solutions=False)
    assert out.rstrip().splitlines()[-2] == f"All 8 submissions: 0 of {TOTAL} points"
    table_rows = [line.split() for line in out.splitlines() if line[:4].strip().isdigit()]
    assert [row[1] for row in table_rows] == list(EXERCISES)
    assert all(" ".join(row[4:]) == "not attempted" for row in table_rows)
    assert results["score"] == 0
    assert all(test["output"].startswith("NOT ATTEMPTED") for test in results["tests"])


WRONG_RELU_AND_PATCHES = """
import numpy as np
import npcbam.ops

# an attempt to make every comparison pass, and npcbam's reference agree with anything
np.allclose = lambda *args, **kwargs: True
np.array_equal = lambda *args, **kwargs: True
np.testing.assert_allclose = lambda *args, **kwargs: None
npcbam.ops.relu_backward = lambda dout, cache: dout * (cache.z >= 0)
npcbam.ops.sigmoid_forward = lambda z: (np.zeros_like(z), None)

def relu_backward(dh, p):
    return dh * (p >= 0)  # the classic bug: the mask taken as p >= 0

def sigmoid_forward(z):
    return 0.5 * (1 + np.tanh(z / 2))  # right, written differently

def sigmoid_backward(ds, z):
    s = sigmoid_forward(z)
    return ds * s * (1 - s)
"""


def test_a_classic_bug_is_diagnosed_and_patching_numpy_or_npcbam_changes_nothing(tmp_path, capsys):
    path = write_py(tmp_path, "student.py", WRONG_RELU_AND_PATCHES)
    assert main(["grade", str(path), "--exercise", "sigmoid", "--exercise", "relu"]) == 0
    out = capsys.readouterr().out
    assert "student.py: 1 of 2 points (2 exercises, " in out
    assert "   1  sigmoid        1      1  passed" in out
    assert "   2  relu           1      0  failed" in out
    assert "your mask is [p ≥ 0]" in out  # the catalogue's diagnosis, through the worker
