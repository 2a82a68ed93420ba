"""The notebooks: stored clean (no outputs, kernel ``python3``), complete (derivations, an
asserted gradient check, a "check yourself" question), and executed top to bottom.

The structural checks read the ``.ipynb`` JSON and need nothing beyond the test extra. The
execution test needs the ``nb`` extra (``pip install ".[nb]"``: Jupyter, nbclient, matplotlib);
without it, it is skipped.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
EXPECTED_COUNT = 8
TIME_LIMIT_PER_NOTEBOOK = 60.0  # seconds; "well under a minute" each, under 3 minutes together
IDS = [path.stem for path in NOTEBOOKS]


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def sources(notebook: dict, kind: str) -> list[str]:
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == kind]


def test_the_eight_notebooks_exist_in_reading_order():
    numbers = [int(path.name[:2]) for path in NOTEBOOKS]
    assert numbers == list(range(1, EXPECTED_COUNT + 1)), [path.name for path in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_stored_clean(path):
    """No outputs or execution counts (small, reviewable diffs), kernel python3, cell ids."""
    notebook = load(path)
    assert notebook["nbformat"] == 4 and notebook["nbformat_minor"] >= 5
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    for index, cell in enumerate(notebook["cells"]):
        assert cell.get("id"), f"{path.name}: cell {index} has no id"
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name}: cell {index} has stored outputs"
            assert cell["execution_count"] is None, f"{path.name}: cell {index} was executed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_has_derivations_a_gradient_check_and_a_question(path):
    notebook = load(path)
    markdown, code = sources(notebook, "markdown"), sources(notebook, "code")
    text, program = "\n".join(markdown), "\n".join(code)
    assert re.search(r"\$\$|\\begin\{", text), f"{path.name}: no displayed LaTeX derivation"
    assert "check yourself" in text.lower(), f"{path.name}: no 'Check yourself' question"
    assert re.search(r"check_(op_)?gradients\(", program), f"{path.name}: no gradient check"
    assert re.search(r"^\s*assert .*(passed|max_rel_err)", program, re.M), (
        f"{path.name}: the gradient check's result is never asserted"
    )
    assert "import npcbam" in program or "from npcbam" in program


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_executes_with_a_figure(path):
    """Top to bottom in a fresh kernel; any exception fails; at least one figure is drawn."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("matplotlib")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=2 * int(TIME_LIMIT_PER_NOTEBOOK),  # per cell; the whole notebook is timed below
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert images, f"{path.name}: executed without drawing a figure"
    assert seconds < TIME_LIMIT_PER_NOTEBOOK, f"{path.name} took {seconds:.1f} s"
