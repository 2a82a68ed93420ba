"""``npcbam grade --json``: Gradescope's results format, field by field (issue 11, acceptance 6).

The format's documentation is summarised, with its address, in ``grading_support``; the checker
``gradescope_problems`` is tested first on documents that break it, so that it can fail.
"""

from __future__ import annotations

import json

import pytest
from grading_support import (
    CORRECT,
    TINY,
    assert_gradescope_results,
    gradescope_problems,
    tiny_evaluate,
    write_notebook,
    write_py,
)

import npcbam.exercises
from npcbam.cli import main

DOCUMENTED_EXAMPLE = {  # the example of the specification's "Test case status" section
    "tests": [
        {"name": "Compilation check", "status": "passed"},
        {"name": "Style check", "status": "failed"},
        {"name": "Test 3", "score": 5, "max_score": 10, "status": "passed"},
    ]
}


@pytest.fixture
def tiny_registry(monkeypatch):
    monkeypatch.setattr(npcbam.exercises, "EXERCISES", TINY)
    monkeypatch.setattr(npcbam.exercises, "evaluate", tiny_evaluate)


def test_the_format_checker_accepts_the_documented_example_and_rejects_departures():
    assert gradescope_problems(DOCUMENTED_EXAMPLE) == []
    good = {"score": 1.0, "tests": [{"name": "a", "score": 1.0, "max_score": 1.0}]}
    assert gradescope_problems(good) == []
    for broken, problem in [
        ({"tests": [{"name": "a"}]}, "no score, neither at the top level nor on a test"),
        ({**good, "score": "1"}, "top level: score is a str"),
        ({**good, "tests": [{"score": 1, "status": "ok"}]}, "tests[0]: status 'ok'"),
        ({**good, "tests": [{"score": 1, "number": 1}]}, "tests[0]: number is a int"),
        ({**good, "tests": [{"score": True}]}, "tests[0]: score is a bool"),
        ({**good, "tests": [{"score": 1, "points": 1}]}, "tests[0]: unknown field 'points'"),
        ({**good, "output_format": "rtf"}, "top level: output_format 'rtf' is not a format"),
        ({**good, "visibility": "never"}, "top level: visibility 'never' is not a visibility"),
        ({**good, "tests": [{"score": 1, "tags": [1]}]}, "tests[0]: a tag that is not a string"),
    ]:
        assert problem in gradescope_problems(broken)


def test_one_submission_gives_exactly_one_gradescope_results_file(tmp_path, tiny_registry, capsys):
    path = write_py(tmp_path, "solutions.py", CORRECT.replace("x * x", "x + x"))  # square wrong
    out = tmp_path / "results.json"
    assert main(["grade", str(path), "--json", str(out)]) == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert_gradescope_results(results)
    assert [
        (t["number"], t["name"], t["score"], t["max_score"], t["status"]) for t in results["tests"]
    ] == [
        ("1", "double: Twice x", 1.0, 1.0, "passed"),
        ("2", "relu: ReLU backward", 2.0, 2.0, "passed"),
        ("3", "square: Square of x", 0.0, 3.0, "failed"),
    ]
    assert results["score"] == 3.0
    assert results["tests"][2]["output"].startswith("FAILED square")
    assert results["output"] == "solutions.py: 3 of 6 points"
    assert results["output_format"] == "text"  # the report's "<" and "*" shown as they are
    assert f"Gradescope results written to {out}" in capsys.readouterr().out


def test_several_notebooks_of_one_student_go_into_one_file(tmp_path, tiny_registry):
    basics = write_notebook(tmp_path, "exA_basics.ipynb", [CORRECT])
    more = write_notebook(
        tmp_path, "exB_more.ipynb", ["def square(x):\n    raise NotImplementedError()"]
    )
    out = tmp_path / "results.json"
    assert main(["grade", str(basics), str(more), "--json", str(out)]) == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert_gradescope_results(results)
    # each notebook graded on its own exercises, numbered by their place in the course
    assert [(t["number"], t["name"], t["status"]) for t in results["tests"]] == [
        ("1", "double: Twice x (exA_basics.ipynb)", "passed"),
        ("2", "relu: ReLU backward (exA_basics.ipynb)", "passed"),
        ("3", "square: Square of x (exB_more.ipynb)", "failed"),
    ]
    assert results["score"] == 3.0


def test_the_same_exercise_in_two_submissions_gets_two_numbers(tmp_path, tiny_registry):
    first = write_py(tmp_path, "first.py", CORRECT)
    second = write_py(tmp_path, "second.py", "def double(x):\n    return x\n")
    out = tmp_path / "results.json"
    assert main(["grade", str(first), str(second), "--exercise", "double", "--json", str(out)]) == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert_gradescope_results(results)
    assert [(t["number"], t["status"]) for t in results["tests"]] == [
        ("1.1", "passed"),
        ("2.1", "failed"),
    ]
