"""Student and instructor versions of the exercise notebooks.

The sources, shipped inside the package (``npcbam/exercises/notebooks/*.ipynb``), are the
instructor notebooks: every solution sits between nbgrader's markers, a line
``### BEGIN SOLUTION`` and a line ``### END SOLUTION``, in code cells (the body of a function)
and in markdown cells (a derivation, an answer). The student version replaces each region,
as nbgrader's ``ClearSolutions`` does:

* in a code cell, by ``# YOUR CODE HERE`` and ``raise NotImplementedError()``, indented as
  the ``### BEGIN SOLUTION`` line was;
* in a markdown cell, by ``YOUR ANSWER HERE``;

and clears every output. The instructor version is the source as it is. Only the ``json``
module is needed (no nbformat), so ``npcbam exercises start`` works with numpy alone.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
TEXT_STUB = ("YOUR ANSWER HERE",)


def notebook_names() -> list[str]:
    """The stems of the source notebooks, in course order (``ex02_...`` to ``ex08_...``)."""
    folder = resources.files("npcbam.exercises") / "notebooks"
    return sorted(
        entry.name.removesuffix(".ipynb")
        for entry in folder.iterdir()
        if entry.name.endswith(".ipynb")
    )


def load_source(name: str) -> dict:
    """The instructor source of notebook ``name`` (a stem from :func:`notebook_names`)."""
    if name not in notebook_names():
        raise ValueError(f"no exercise notebook named {name!r}; expected one of {notebook_names()}")
    entry = resources.files("npcbam.exercises") / "notebooks" / f"{name}.ipynb"
    return json.loads(entry.read_text(encoding="utf-8"))


def cell_text(cell: dict) -> str:
    """A cell's source as one string (nbformat stores a string or a list of lines)."""
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def strip_solutions(text: str, stub: tuple[str, ...], where: str = "a cell") -> str:
    """``text`` with every solution region replaced by ``stub``, indented as its BEGIN line.

    Raises
    ------
    ValueError
        For a BEGIN inside a region, an END outside one, or a region left open; the message
        names ``where`` and the line.
    """
    kept: list[str] = []
    inside = False
    for number, line in enumerate(text.split("\n"), start=1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: {BEGIN!r} inside a solution region")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            kept.extend(indent + stub_line for stub_line in stub)
        elif marker == END:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END!r} without a {BEGIN!r}")
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN!r} without a matching {END!r}")
    return "\n".join(kept)


def as_lines(text: str) -> list[str]:
    """nbformat's list-of-lines form of a source (every line but the last keeps its newline)."""
    return text.splitlines(keepends=True)


def student_version(notebook: dict) -> dict:
    """A copy of ``notebook`` with every solution region replaced by its stub, outputs
    cleared. The input is not modified."""
    student = copy.deepcopy(notebook)
    for index, cell in enumerate(student["cells"]):
        stub = CODE_STUB if cell["cell_type"] == "code" else TEXT_STUB
        where = f"cell {index} (id {cell.get('id', '?')})"
        cell["source"] = as_lines(strip_solutions(cell_text(cell), stub, where))
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return student


def instructor_version(notebook: dict) -> dict:
    """The source as it is (a copy), solutions and all."""
    return copy.deepcopy(notebook)


def dumps(notebook: dict) -> str:
    """The notebook as ``.ipynb`` text (JSON, one-space indent, as Jupyter writes it)."""
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def write_notebooks(directory, solutions: bool = False, force: bool = False) -> list[Path]:
    """Write every exercise notebook into ``directory`` (created if missing).

    Parameters
    ----------
    directory : str or Path
    solutions : bool
        False: the student versions; True: the instructor versions, with the solutions.
    force : bool
        Overwrite notebooks that already exist there. Without it, nothing is written if any
        of them exists.

    Returns
    -------
    paths : list of Path, the files written, in course order

    Raises
    ------
    FileExistsError
        When a target exists and ``force`` is False (the message names the files), or
        ``directory`` is an existing file.
    """
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a directory")
    make = instructor_version if solutions else student_version
    targets = {folder / f"{name}.ipynb": make(load_source(name)) for name in notebook_names()}
    existing = [path.name for path in targets if path.exists()]
    if existing and not force:
        raise FileExistsError(
            f"{folder} already holds {', '.join(existing)}; "
            "use --force to overwrite them, or choose another directory"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for path, notebook in targets.items():
        path.write_text(dumps(notebook), encoding="utf-8")
    return list(targets)
