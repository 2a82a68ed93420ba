"""Grading needs NumPy alone: where matplotlib is missing (a plain ``pip install .``, as on a
Gradescope image), a solution notebook loses its pictures, never its points."""

from __future__ import annotations

import json

from grading_support import assert_gradescope_results

from npcbam.cli import main
from npcbam.exercises import EXERCISES


def test_solutions_get_full_marks_without_matplotlib(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "blocked" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib is not installed here')\n")
    monkeypatch.setenv("PYTHONPATH", str(blocker.parent))  # the workers inherit it
    folder = tmp_path / "solutions"
    assert main(["exercises", "start", str(folder), "--solutions"]) == 0
    capsys.readouterr()
    results_file = tmp_path / "results.json"
    notebooks = sorted(map(str, folder.glob("*.ipynb")))
    assert main(["grade", *notebooks, "--json", str(results_file)]) == 0
    out = capsys.readouterr().out
    total = sum(exercise.points for exercise in EXERCISES.values())
    assert f"{total} of {total} points" in out, out
    # what failed while loading: only the cells that import matplotlib, and those that draw
    loading = [line for line in out.splitlines() if line.startswith("  cell ")]
    assert loading and all("matplotlib" in line or "plt" in line for line in loading), loading
    results = json.loads(results_file.read_text(encoding="utf-8"))
    assert_gradescope_results(results)
    assert results["score"] == total
