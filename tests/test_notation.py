"""One notation for gradients in the notebooks and the theory pages: the bar.

The theory pages define :math:`\\bar t = \\partial L/\\partial t` for every tensor :math:`t`
(``docs/theory/index.md``). These checks read the Markdown of the notebooks and of the pages and
fail on the notations that crept in beside it: Greek letters naming upstream gradients
(:math:`\\delta`, :math:`\\zeta`, :math:`\\pi`), primed capitals (:math:`G'`, :math:`G''`),
:math:`\\partial L/\\partial x` outside a definition of :math:`\\bar x`, and a bar used for a
mean (the channel mean is :math:`s^{\\text{avg}}`, never :math:`\\bar s`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PAGES = [*sorted((ROOT / "docs" / "theory").glob("*.md")), ROOT / "docs" / "gradient-checking.md"]
SOURCES = NOTEBOOKS + PAGES
IDS = [f"{path.parent.name}/{path.stem}" for path in SOURCES]

GREEK_GRADIENT = re.compile(r"\\(delta|zeta|pi)(?![A-Za-z])")
PRIMED_G = re.compile(r"(?<![A-Za-z\\])G'")
# dL/dX is allowed only where it defines the bar: "\bar X = \partial L/\partial X" or
# "\bar X = \frac{\partial L}{\partial X}" (X the same symbol on both sides)
DEFINITION = re.compile(
    r"\\bar\s*\{?(?P<name>\\?[A-Za-z]+'*(?:_\{[^{}]*\}|_\w)?)\}?\s*=\s*"
    r"(?:\\frac\{\\partial L\}\{\\partial\s*(?P=name)\}|\\partial L\s*/\s*\\partial\s*(?P=name))"
)
# "\bar x_{..} = <right-hand side>", the right-hand side up to the next $ or &
BARRED_EQUATION = re.compile(
    r"\\bar\s*\{?\\?[A-Za-z]+'*\}?(?:_\{[^{}]*\}|_\w)?\s*&?=(?P<rhs>[^$&]*)"
)


def first_term(rhs: str) -> str:
    """The right-hand side up to a line break or a \\quad outside braces (the next equation)."""
    depth = 0
    for index, char in enumerate(rhs):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0 and re.match(r"\\\\|\\q?quad", rhs[index:]):
            return rhs[:index]
    return rhs


def markdown(path: Path) -> str:
    """The Markdown a reader sees: a page's text, or a notebook's Markdown cells."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".ipynb":
        return text
    cells = json.loads(text)["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def test_the_notation_is_defined_once_on_the_theory_index():
    index = (ROOT / "docs" / "theory" / "index.md").read_text(encoding="utf-8")
    assert DEFINITION.search(index), "docs/theory/index.md no longer defines the bar"


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_gradients_are_written_with_a_bar(path):
    text = markdown(path)
    greek = sorted({match.group(0) for match in GREEK_GRADIENT.finditer(text)})
    assert not greek, f"{path.name}: {greek} name gradients; write the bar (\\bar x)"
    assert not PRIMED_G.search(text), f"{path.name}: G' or G'' names a gradient; write \\bar F'"
    undefined = [
        line.strip()
        for line in DEFINITION.sub("", text).splitlines()
        if re.search(r"\\partial L\b", line)
    ]
    assert not undefined, f"{path.name}: dL/dx outside a definition of the bar: {undefined}"


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_a_bar_never_marks_a_mean(path):
    """A barred symbol defined as a sum or average of unbarred values is a mean, not a
    gradient (as the channel mean once was, beside a barred gradient)."""
    offending = []
    for match in BARRED_EQUATION.finditer(markdown(path)):
        rhs = first_term(match.group("rhs"))
        summed = re.search(r"\\sum|\\operatorname\{mean\}|\\mathrm\{mean\}", rhs)
        if summed and not re.search(r"\\bar|\\overline", rhs):
            offending.append(match.group(0).strip()[:80])
    assert not offending, f"{path.name}: a bar on a mean or sum of values: {offending}"


def notebook_text(stem: str) -> tuple[str, str]:
    cells = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))["cells"]
    markdown_text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return markdown_text, code


def test_notebook_2_locates_the_float32_overflow_it_states():
    """exp(-z) overflows float32 below z = -88.72, so already at z = -100 (not "at -1e4")."""
    text, code = notebook_text("02_sigmoid_relu_mlp")
    assert "88.72" in text
    assert re.search(r"^assert exp_overflows\(-np\.float32\(-100\.0\)\)", code, re.M)
    assert re.search(r"^assert not exp_overflows\(-np\.float32\(-88\.7228\)\)", code, re.M)
    assert "at z = -1e4" not in code


def test_notebook_5_does_not_call_pooled_values_trained():
    text, _ = notebook_text("05_channel_attention")
    assert not re.search(r"pooled values[^.?]*\bare (still )?trained", text)


def test_notebook_8_explains_and_measures_the_epoch_1_accuracy_gap():
    text, code = notebook_text("08_cbam_in_a_network")
    assert "after* the epoch" in text and "first epoch" in text
    assert "npcbam.train.accuracy(one_epoch.model, train_set)" in code
    assert re.search(r"^assert abs\(after - first\[\"test_accuracy\"\]\)", code, re.M)
