"""The exercise notebooks: clean instructor sources, every exercise in exactly one notebook,
student versions without a trace of the solutions, ``npcbam exercises list`` and ``start``,
and the notebooks executed: every instructor solution PASSES its check, every student check
says "not attempted" and no student cell raises.

The execution tests need the ``nb`` extra (nbclient, ipykernel, matplotlib); without it they
are skipped.
"""

from __future__ import annotations

import json
import re

import pytest

from npcbam.cli import main
from npcbam.exercises import EXERCISES
from npcbam.exercises.build import (
    BEGIN,
    END,
    cell_text,
    instructor_version,
    load_source,
    notebook_names,
    strip_solutions,
    student_version,
)

NAMES = notebook_names()
EXPECTED_NAMES = [
    "ex02_sigmoid_relu_mlp",
    "ex03_pooling",
    "ex04_im2col_convolution",
    "ex05_channel_attention",
    "ex06_spatial_attention",
    "ex07_cbam_end_to_end",
    "ex08_design_your_own_gate",
    "ex09_attention_family",
]
CHECK_CALL = re.compile(r"""\bcheck\(\s*["'](\w+)["']((?:\s*,\s*\w+)*)\s*\)""")
GRADE_ID = re.compile(r"^[a-zA-Z0-9_\-]+$")  # what nbgrader accepts
CELL_ID = re.compile(r"^[a-zA-Z0-9_\-]{1,64}$")  # what nbformat 4.5 accepts


def code_cells(notebook: dict) -> list[str]:
    return [cell_text(cell) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def check_calls(notebook: dict) -> list[tuple[str, list[str]]]:
    """``(exercise, [function names])`` of every ``check(...)`` call, in order."""
    calls = []
    for source in code_cells(notebook):
        for match in CHECK_CALL.finditer(source):
            functions = [name.strip() for name in match.group(2).split(",") if name.strip()]
            calls.append((match.group(1), functions))
    return calls


def solution_regions(text: str) -> list[list[str]]:
    """The lines strictly between each BEGIN/END pair of ``text``."""
    regions, current = [], None
    for line in text.split("\n"):
        if line.strip() == BEGIN:
            current = []
        elif line.strip() == END:
            regions.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return regions


def test_the_eight_notebooks_ship_in_course_order():
    assert NAMES == EXPECTED_NAMES


@pytest.mark.parametrize("name", NAMES)
def test_source_is_stored_clean(name):
    """nbformat 4.5 with valid unique cell ids, kernel python3, no outputs, no counts."""
    notebook = load_source(name)
    assert (notebook["nbformat"], notebook["nbformat_minor"]) == (4, 5)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    ids = [cell.get("id", "") for cell in notebook["cells"]]
    assert all(CELL_ID.match(cell_id) for cell_id in ids), ids
    assert len(set(ids)) == len(ids), f"{name}: duplicate cell ids"
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["id"]
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.from_dict(notebook))


def test_every_exercise_has_one_check_cell_in_its_notebook_and_defines_its_functions():
    found: dict[str, list[str]] = {}
    defined: dict[str, list[str]] = {}
    for name in NAMES:
        notebook = load_source(name)
        for exercise, functions in check_calls(notebook):
            assert exercise in EXERCISES, f"{name}: check of an unknown exercise {exercise!r}"
            assert functions == list(EXERCISES[exercise].functions), (name, exercise, functions)
            found.setdefault(exercise, []).append(name)
        for source in code_cells(notebook):
            for function in re.findall(r"^def (\w+)\(", source, re.M):
                defined.setdefault(function, []).append(name)
    for exercise in EXERCISES.values():
        where = found.get(exercise.name)
        assert where == [exercise.notebook], (exercise.name, where)
        for function in exercise.functions:
            # defined once, in the exercise's own notebook: a notebook stands on its own
            assert defined.get(function) == [exercise.notebook], (function, defined.get(function))


@pytest.mark.parametrize("name", NAMES)
def test_markers_are_balanced_and_every_region_is_in_an_nbgrader_solution_cell(name):
    """What nbgrader's ClearSolutions and CheckCellMetadata require of the sources, so a
    teacher can give them to ``nbgrader generate_assignment`` unchanged."""
    grade_ids = []
    for cell in load_source(name)["cells"]:
        text = cell_text(cell)
        strip_solutions(text, ("stub",), cell["id"])  # raises on unbalanced or nested markers
        meta = cell["metadata"].get("nbgrader")
        if solution_regions(text):
            assert meta and meta["solution"] is True, f"{name}: {cell['id']} is no solution cell"
        if meta:
            assert GRADE_ID.match(meta["grade_id"]) and meta["schema_version"] == 3
            grade_ids.append(meta["grade_id"])
            if cell["cell_type"] == "markdown" and meta["solution"]:
                assert meta["grade"] is True and float(meta["points"]) >= 0  # nbgrader's rule
    assert len(set(grade_ids)) == len(grade_ids), f"{name}: duplicate grade ids"


@pytest.mark.parametrize("name", NAMES)
def test_every_exercise_has_a_derivation_a_solution_and_links(name):
    notebook = load_source(name)
    markdown = [cell_text(c) for c in notebook["cells"] if c["cell_type"] == "markdown"]
    answers = [text for text in markdown if solution_regions(text)]
    exercises = [e for e in EXERCISES.values() if e.notebook == name]
    # one derivation per exercise, plus the answers of "Check yourself"
    assert len(answers) == len(exercises) + 1
    assert "## Check yourself" in markdown[-2] and solution_regions(markdown[-1])
    text = "\n".join(markdown)
    assert "docs/theory/" in text and "arXiv:1807.06521" in text
    for exercise in exercises:
        assert f"Exercise `{exercise.name}`" in text
        assert exercise.theory in text, (exercise.name, exercise.theory)
    assert "](../" not in text, "relative links break once the notebook is copied"


@pytest.mark.parametrize("name", NAMES)
def test_student_version_holds_no_solution_and_a_stub_per_region(name):
    source = load_source(name)
    student = student_version(source)
    assert student["cells"][0] is not source["cells"][0]  # a copy ...
    assert instructor_version(source) == source  # ... and the instructor version is the source
    outside, inside, code_regions, text_regions = set(), set(), 0, 0
    for cell in source["cells"]:
        text = cell_text(cell)
        regions = solution_regions(text)
        if cell["cell_type"] == "code":
            code_regions += len(regions)
        else:
            text_regions += len(regions)
        inside.update(line.strip() for region in regions for line in region if line.strip())
        outside.update(line.strip() for line in strip_solutions(text, ()).split("\n"))
    secret = inside - outside  # solution lines that appear nowhere else in the notebook
    assert len(secret) > 10
    student_lines = {
        line.strip() for cell in student["cells"] for line in cell_text(cell).split("\n")
    }
    assert not secret & student_lines, sorted(secret & student_lines)[:5]
    student_text = "\n".join(cell_text(cell) for cell in student["cells"])
    assert BEGIN not in student_text and END not in student_text
    student_code = "\n".join(code_cells(student))
    assert student_code.count("raise NotImplementedError()") == code_regions
    assert student_code.count("# YOUR CODE HERE") == code_regions
    stub_lines = [line for line in student_text.split("\n") if line == "YOUR ANSWER HERE"]
    assert len(stub_lines) == text_regions
    for cell in student["cells"]:
        if "raise NotImplementedError()" in cell_text(cell):
            # inside a function body (indented like the marker was), so executing the cell
            # defines the function instead of raising
            lines = cell_text(cell).split("\n")
            stubs = [i for i, line in enumerate(lines) if line.strip() == "# YOUR CODE HERE"]
            for i in stubs:
                assert lines[i].startswith("    ") and lines[i + 1] == lines[i].replace(
                    "# YOUR CODE HERE", "raise NotImplementedError()"
                )


def test_strip_solutions_names_unbalanced_markers():
    with pytest.raises(ValueError, match=r"cell x, line 3: '### BEGIN SOLUTION' inside"):
        strip_solutions("a\n### BEGIN SOLUTION\n### BEGIN SOLUTION\n", ("s",), "cell x")
    with pytest.raises(ValueError, match="without a '### BEGIN SOLUTION'"):
        strip_solutions("### END SOLUTION", ("s",), "cell x")
    with pytest.raises(ValueError, match="without a matching"):
        strip_solutions("    ### BEGIN SOLUTION\n    secret", ("s",), "cell x")
    source = "def f():\n    ### BEGIN SOLUTION\n    secret\n    ### END SOLUTION"
    stripped = strip_solutions(source, ("a", "b"))
    assert stripped == "def f():\n    a\n    b"


def test_start_writes_the_student_notebooks_and_refuses_to_overwrite(tmp_path, capsys):
    folder = tmp_path / "new" / "course"  # created, parents included
    assert main(["exercises", "start", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"npcbam grade {folder}/*.ipynb" in out and "jupyter" in out
    written = sorted(path.name for path in folder.iterdir())
    assert written == [f"{name}.ipynb" for name in NAMES]
    for name in NAMES:
        on_disk = json.loads((folder / f"{name}.ipynb").read_text(encoding="utf-8"))
        assert on_disk == student_version(load_source(name))
        assert name in out

    (folder / "ex03_pooling.ipynb").write_text("my work", encoding="utf-8")
    assert main(["exercises", "start", str(folder)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "ex03_pooling.ipynb" in error and "--force" in error
    assert (folder / "ex03_pooling.ipynb").read_text(encoding="utf-8") == "my work"

    assert main(["exercises", "start", str(folder), "--solutions", "--force"]) == 0
    for name in NAMES:
        on_disk = json.loads((folder / f"{name}.ipynb").read_text(encoding="utf-8"))
        assert on_disk == load_source(name)


def test_start_refuses_a_file_in_the_way(tmp_path, capsys):
    blocker = tmp_path / "course"
    blocker.write_text("", encoding="utf-8")
    assert main(["exercises", "start", str(blocker)]) == 1
    assert "is not a directory" in capsys.readouterr().err


def test_list_prints_every_exercise(capsys):
    assert main(["exercises", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for exercise in EXERCISES.values():
        row = next(line for line in lines if line.split()[:1] == [exercise.name])
        assert row.split()[1:3] == [str(exercise.points), exercise.notebook]
        assert row.endswith(exercise.title)
    total = sum(e.points for e in EXERCISES.values())
    assert f"{len(EXERCISES)} exercises, {total} points" in lines[-1]


RECORD = """\
import npcbam.exercises as _exercises

_recorded = []
_check = _exercises.check


def _recording_check(name, *functions):
    result = _check(name, *functions)
    _recorded.append([name, result.status])
    return result


_exercises.check = _recording_check
"""
REPORT = "import json\nprint('RECORDED ' + json.dumps(_recorded))"


def outputs_of(cell) -> str:
    return "".join(output.get("text", "") for output in cell.outputs)


@pytest.fixture
def kernel_environment(monkeypatch):
    monkeypatch.delenv("NPCBAM_GRADING", raising=False)  # check() is live, not the grader's no-op
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend: figures


@pytest.mark.parametrize("name", NAMES)
def test_student_then_instructor_version_execute(name, tmp_path, kernel_environment):
    """In one fresh kernel (one start per notebook keeps this fast), with every ``check``
    recorded: the student version runs without an exception and every check says "not
    attempted"; then the instructor version runs and every check PASSES, its report printed
    under its cell. Any exception in any cell fails the test."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    source = load_source(name)
    student = nbformat.reads(json.dumps(student_version(source)), as_version=4)
    instructor = nbformat.reads(json.dumps(instructor_version(source)), as_version=4)
    node = nbformat.v4.new_notebook(metadata=student.metadata)
    node.cells = [
        nbformat.v4.new_code_cell(RECORD),
        *student.cells,
        nbformat.v4.new_code_cell("_recorded.append(['instructor', 'starts'])"),
        *instructor.cells,
        nbformat.v4.new_code_cell(REPORT),
    ]
    client = nbclient.NotebookClient(
        node, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    recorded = [tuple(pair) for pair in json.loads(outputs_of(node.cells[-1]).split(" ", 1)[1])]
    split = recorded.index(("instructor", "starts"))
    exercises = [e.name for e in EXERCISES.values() if e.notebook == name]
    assert recorded[:split] == [(exercise, "not attempted") for exercise in exercises]
    assert recorded[split + 1 :] == [(exercise, "passed") for exercise in exercises]
    student_cells = node.cells[1 : 1 + len(student.cells)]
    instructor_cells = node.cells[2 + len(student.cells) : -1]
    for part, expected in ((student_cells, "NOT ATTEMPTED"), (instructor_cells, "PASS")):
        for cell in part:
            match = CHECK_CALL.search(cell.source) if cell.cell_type == "code" else None
            if match:  # the report is printed under the check cell
                assert outputs_of(cell).startswith(f"{expected} {match.group(1)} "), outputs_of(
                    cell
                )
        images = [o for c in part if c.cell_type == "code" for o in c.outputs if "data" in o]
        assert any("image/png" in output["data"] for output in images), f"{name}: no figure"
