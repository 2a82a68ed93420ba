r"""A submission's code as *units* run one after another: a notebook's code cells, or the
top-level statements of a ``.py`` file.

Running a submission unit by unit, each in its own ``try``, is what lets one broken piece (a
cell that raises, a statement that imports a missing module) cost only the functions it
defines. Only the standard library is used (a notebook is JSON, nbformat 4), so grading needs
nothing beyond numpy.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".ipynb", ".py")

# An IPython magic (%time, %%capture) or shell escape (!pip install ...): not Python.
_MAGIC = re.compile(r"^(\s*)[%!]")


class SubmissionError(Exception):
    """The file cannot be read as a submission at all (not JSON, not a notebook, ...)."""


@dataclass(frozen=True)
class Unit:
    """A piece of a submission run on its own.

    Attributes
    ----------
    label : str
        As shown in messages: ``"cell 3"`` (counting code cells from 1) or ``"line 12"``.
    filename : str
        The name the code is compiled under (shown in tracebacks): ``"<cell 3>"`` for a
        notebook cell, the file's path for a ``.py`` file.
    source : str
        The code. For a ``.py`` file, the whole file (so that line numbers are the file's);
        ``node`` selects the statement.
    node : ast.Module or None
        For a ``.py`` file, the statement to run, wrapped in a module; None for a cell.
    """

    label: str
    filename: str
    source: str
    node: ast.Module | None = None

    def compile(self):
        """The code object of this unit (may raise SyntaxError for a cell)."""
        return compile(self.node if self.node is not None else self.source, self.filename, "exec")


def read_units(path: str | Path) -> list[Unit]:
    """The units of the submission at ``path`` (``.ipynb`` or ``.py``), in order.

    Raises
    ------
    SubmissionError
        For a notebook that is not JSON in nbformat 4, or a ``.py`` file that is not Python
        (its syntax error, with the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SubmissionError(f"cannot read {path.name}: {error}") from error
    if path.suffix == ".ipynb":
        return notebook_units(text)
    return module_units(text, str(path))


def notebook_units(text: str) -> list[Unit]:
    """The code cells of a notebook (nbformat 4 JSON), magics and shell lines made ``pass``."""
    try:
        notebook = json.loads(text)
    except ValueError as error:
        raise SubmissionError(f"the notebook is not valid JSON ({error})") from error
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        raise SubmissionError("the notebook has no list of cells (expected nbformat 4)")
    units = []
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(line) for line in source)
        if not isinstance(source, str):
            continue
        number = len(units) + 1
        units.append(Unit(f"cell {number}", f"<cell {number}>", without_magics(source)))
    return units


def without_magics(source: str) -> str:
    """``source`` with each line that starts with ``%`` or ``!`` replaced by ``pass`` at the same
    indentation (so blocks stay valid and line numbers stay the notebook's)."""
    return "\n".join(_MAGIC.sub(r"\1pass  # ", line) for line in source.split("\n"))


def module_units(text: str, filename: str) -> list[Unit]:
    """The top-level statements of a Python file, each a unit labelled by its first line."""
    try:
        tree = ast.parse(text, filename=filename)
    except SyntaxError as error:
        raise SubmissionError(
            f"SyntaxError: {error.msg} (line {error.lineno}: {(error.text or '').strip()})"
        ) from error
    return [
        Unit(f"line {statement.lineno}", filename, text, ast.Module([statement], []))
        for statement in tree.body
    ]
