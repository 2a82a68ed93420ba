"""``npcbam grade`` on the command line: the score table, the feedback, usage errors (exit 2,
one line, no traceback) and exit status 0 whatever the scores."""

from __future__ import annotations

import subprocess
import sys

import pytest
from grading_support import CORRECT, TINY, tiny_evaluate, write_notebook, write_py

import npcbam.exercises
from npcbam.cli import main


@pytest.fixture
def tiny_registry(monkeypatch):
    monkeypatch.setattr(npcbam.exercises, "EXERCISES", TINY)
    monkeypatch.setattr(npcbam.exercises, "evaluate", tiny_evaluate)


def test_the_table_and_the_feedback_of_what_failed(tmp_path, tiny_registry, capsys):
    path = write_notebook(
        tmp_path,
        "alice.ipynb",
        [
            "def double(x):\n    return 2 * x",
            "def relu_backward(dh, p):\n    raise NotImplementedError()",
            "def square(x):\n    return x + x",
            "undefined_name",
        ],
    )
    assert main(["grade", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("alice.ipynb: 1 of 6 points (3 exercises, ")
    assert lines[2:7] == [
        "   #  exercise  points  score  status",
        "   1  double         1      1  passed",
        "   2  relu           2      0  not attempted",
        "   3  square         3      0  failed",
        "      total          6      1",
    ]
    assert "cell 4: NameError: name 'undefined_name' is not defined (line 1: undefined_name)" in out
    assert "NOT ATTEMPTED relu" in out and "FAILED square" in out
    assert "PASSED double" not in out  # feedback only for what did not pass


def test_a_file_is_graded_on_its_notebooks_exercises_or_on_all(tmp_path, tiny_registry, capsys):
    named = write_py(tmp_path, "bob_EXB_more.py", CORRECT)  # the name, in any case
    other = write_py(tmp_path, "bob.py", CORRECT)
    assert main(["grade", str(named), str(other)]) == 0
    out = capsys.readouterr().out
    assert "bob_EXB_more.py: 3 of 3 points (1 exercise, " in out
    assert "bob.py: 6 of 6 points (3 exercises, " in out
    assert out.rstrip().endswith("All 2 submissions: 9 of 9 points")
    assert main(["grade", str(other), "--exercise", "relu", "--exercise", "double"]) == 0
    assert "bob.py: 3 of 3 points (2 exercises, " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{dir}/missing.ipynb"], "{dir}/missing.ipynb: no such file"),
        (["{dir}/notes.txt"], "{dir}/notes.txt: expected a .ipynb notebook or a .py file"),
        (
            ["{dir}/ok.py", "--exercise", "nope"],
            "unknown exercise 'nope'; known: double, relu, square",
        ),
        (
            ["{dir}/ok.py", "--timeout", "0"],
            "--timeout must be a positive number of seconds, got 0.0",
        ),
        (
            ["{dir}/ok.py", "--timeout", "nan"],
            "--timeout must be a positive number of seconds, got nan",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, tiny_registry, capsys, arguments, message):
    (tmp_path / "notes.txt").write_text("hello")
    write_py(tmp_path, "ok.py", CORRECT)
    arguments = [argument.format(dir=tmp_path) for argument in arguments]
    assert main(["grade", *arguments]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"npcbam grade: error: {message.format(dir=tmp_path)}\n"


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "npcbam", "grade", str(tmp_path / "absent.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == f"npcbam grade: error: {tmp_path / 'absent.py'}: no such file\n"
    assert "Traceback" not in result.stdout + result.stderr
