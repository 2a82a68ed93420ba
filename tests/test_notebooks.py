"""The notebooks: stored clean (no outputs, kernel ``python3``), complete (derivations, an
asserted gradient check, a "check yourself" question), and executed top to bottom.

The structural checks read the ``.ipynb`` JSON and need nothing beyond the test extra. The
execution test needs the ``nb`` extra (``pip install ".[nb]"``: Jupyter, nbclient, matplotlib);
without it, it is skipped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS_PAGE = ROOT / "docs" / "notebooks.md"
PAPER = "https://arxiv.org/abs/1807.06521"  # Woo et al., CBAM, ECCV 2018
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
EXPECTED_COUNT = 9
# A guard against a hung kernel, not a speed test (speed is measured in benchmarks, never in
# tests: a loaded machine must not turn slowness into failures).
CELL_TIMEOUT = 600  # seconds
IDS = [path.stem for path in NOTEBOOKS]


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def sources(notebook: dict, kind: str) -> list[str]:
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == kind]


def test_the_notebooks_exist_in_reading_order():
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


def theory_pages_listed_beside(stem: str) -> set[str]:
    """The theory pages that docs/notebooks.md pairs with notebook ``stem`` in its table."""
    for line in NOTEBOOKS_PAGE.read_text(encoding="utf-8").splitlines():
        if f"{{doc}}`notebooks/{stem}`" in line:
            return set(re.findall(r"\{doc\}`theory/([\w-]+)`", line))
    raise AssertionError(f"{stem} is not in the table of {NOTEBOOKS_PAGE.name}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_links_its_neighbours_its_theory_pages_and_the_paper(path):
    """Links that work in Jupyter (relative file paths) and on the site (the docs build maps
    them to pages): the previous and next notebook, the theory pages docs/notebooks.md pairs
    it with, and the paper."""
    targets = set(MARKDOWN_LINK.findall("\n".join(sources(load(path), "markdown"))))
    number = int(path.name[:2])
    neighbours = {other.name for other in NOTEBOOKS if abs(int(other.name[:2]) - number) == 1}
    assert neighbours <= targets, f"{path.name}: no link to {sorted(neighbours - targets)}"
    assert PAPER in targets, f"{path.name}: no link to the paper, {PAPER}"
    theory = {Path(target).stem for target in targets if target.startswith("../docs/theory/")}
    assert theory == theory_pages_listed_beside(path.stem), f"{path.name}: theory links {theory}"
    for target in targets:
        if "://" not in target:
            file = (NOTEBOOK_DIR / target.split("#")[0]).resolve()
            assert file.is_file(), f"{path.name}: the link {target} leads nowhere"


def seed_forward_lines(markdown: str) -> list[str]:
    """The statements of seed code 1's ``forward`` as a notebook quotes it."""
    match = re.search(r"# seed code 1\n.*?def forward\(self, x\):\n(.*?)```", markdown, re.S)
    assert match, "the notebook does not quote seed code 1's forward"
    return [line.strip() for line in match.group(1).splitlines() if line.strip()]


def test_notebook_1_writes_the_seed_forward_line_by_line_with_npcbam_ops():
    """Seed code 1's forward, quoted, next to npcbam's forward written with the ops (each seed
    line as a comment over its NumPy line) and asserted bit-identical to ``npcbam.CBAM``;
    no generic module source printed in its place."""
    notebook = load(NOTEBOOK_DIR / "01_overview.ipynb")
    program = "\n".join(sources(notebook, "code"))
    seed = seed_forward_lines("\n".join(sources(notebook, "markdown")))
    assert "channel_out = self.sigmoid(max_out + avg_out)" in seed
    comments = [line.strip().lstrip("#").strip() for line in program.splitlines()]
    missing = [line for line in seed if not any(c.startswith(line) for c in comments)]
    assert not missing, f"seed lines with no counterpart in the code: {missing}"
    assert "getsource" not in program, "prints module source instead of the seed's steps"
    assert re.search(r"assert_array_equal\(\w+, small\(x_small\)\)", program)


def test_notebook_8_derives_grad_cam_before_its_code():
    """Numbered sections without a gap, a Grad-CAM section whose derivation (alpha as the
    averaged gradient, the weighted sum, the ReLU, the upsampling) comes before the code
    that computes it, and no stale shape comments (widths (8, 16) give 16 channels)."""
    cells = load(NOTEBOOK_DIR / "08_cbam_in_a_network.ipynb")["cells"]
    texts = ["".join(cell["source"]) for cell in cells]
    numbers = [int(n) for text in texts for n in re.findall(r"^## (\d+)\.", text, re.M)]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    heading = re.compile(r"^## \d+\. Grad-CAM", re.M)
    section = next(i for i, text in enumerate(texts) if heading.search(text))
    code = next(i for i, text in enumerate(texts) if "alpha = dA.mean(" in text)
    derivation = "\n".join(texts[section:code])
    for step in (r"\alpha_k = \frac{1}{hw}", r"\mathrm{relu}", "upsampl", r"W_{tk}"):
        assert step in derivation, f"the Grad-CAM derivation lacks {step!r}"
    program = "\n".join(text for cell, text in zip(cells, texts) if cell["cell_type"] == "code")
    assert "32" not in re.findall(r"\((?:N|4 classes), (\d+)", program), "stale shape comment"
    assert re.search(r"assert n_tensors == 26", program)
    assert "27 parameter tensors" not in "\n".join(texts)


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
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert images, f"{path.name}: executed without drawing a figure"
