"""The documentation's sources: complete and wired to the code, checked without building.

Building the site (Sphinx, every notebook executed, warnings as errors) and opening it in a
browser are CI steps of their own (``.ci/check-docs-in-browser``); these tests read the
sources only and need nothing beyond the test extra.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import runpy
from pathlib import Path

import pytest

import npcbam

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api"
THEORY = DOCS / "theory"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
THEORY_PAGES = sorted(path for path in THEORY.glob("*.md") if path.name != "index.md")
# modules that are not part of the documented API: the ``python -m npcbam`` entry point
UNDOCUMENTED_MODULES = {"npcbam.__main__"}
AUTOMODULE = re.compile(r"^\.\. automodule:: (\S+)\n((?:   :\S.*\n)*)", re.M)


def documented_modules() -> dict[str, bool]:
    """Every module an API page documents, and whether with its members."""
    found = {}
    for page in API.glob("*.md"):
        for name, options in AUTOMODULE.findall(page.read_text(encoding="utf-8")):
            found[name] = found.get(name, False) or ":members:" in options
    return found


def all_modules() -> list[str]:
    names = ["npcbam"]
    for info in pkgutil.walk_packages(npcbam.__path__, prefix="npcbam."):
        names.append(info.name)
    return sorted(set(names) - UNDOCUMENTED_MODULES)


def public_objects(module_name: str):
    """Functions and classes a module defines (not imports) under a public name."""
    module = importlib.import_module(module_name)
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if obj.__module__ == module_name:
            yield name, obj


def test_every_module_with_public_objects_is_in_the_api_reference():
    documented = documented_modules()
    missing = [
        name
        for name in all_modules()
        if any(True for _ in public_objects(name)) and not documented.get(name)
    ]
    assert not missing, f"add an automodule with :members: to a page in docs/api/: {missing}"


def test_every_exported_name_is_documented_where_it_is_defined():
    """``npcbam.X``, ``npcbam.ops.X``, ``npcbam.nn.X``, ``npcbam.optim.X``: the module that
    defines each one is documented with its members (private modules included)."""
    documented = documented_modules()
    for package in ("npcbam", "npcbam.ops", "npcbam.nn", "npcbam.optim"):
        module = importlib.import_module(package)
        for name in module.__all__:
            home = getattr(module, name).__module__
            assert documented.get(home), f"{package}.{name} is defined in {home}, not documented"


def test_every_api_page_is_in_the_api_contents():
    index = (API / "index.md").read_text(encoding="utf-8")
    for page in API.glob("*.md"):
        if page.name != "index.md":
            assert re.search(rf"^{page.stem}$", index, re.M), f"{page.name} not in api/index.md"


@pytest.mark.parametrize("page", THEORY_PAGES, ids=[page.stem for page in THEORY_PAGES])
def test_theory_page_links_its_notebook_and_its_code(page):
    text = page.read_text(encoding="utf-8")
    assert re.search(r"\{doc\}`\.\./notebooks/\d\d_\w+`", text), f"{page.name}: no notebook link"
    assert re.search(r"\{(func|class|meth)\}`[^`]*npcbam\.", text), f"{page.name}: no API link"
    assert "$$" in text, f"{page.name}: no displayed derivation"
    for notebook in re.findall(r"\{doc\}`\.\./notebooks/(\d\d_\w+)`", text):
        assert (ROOT / "notebooks" / f"{notebook}.ipynb").is_file(), f"{page.name}: {notebook}"


def test_every_theory_page_is_in_the_theory_contents():
    index = (THEORY / "index.md").read_text(encoding="utf-8")
    for page in THEORY_PAGES:
        assert re.search(rf"^{page.stem}$", index, re.M), f"{page.name} not in theory/index.md"


def test_every_notebook_is_listed_on_the_notebooks_page():
    text = (DOCS / "notebooks.md").read_text(encoding="utf-8")
    for notebook in NOTEBOOKS:
        assert f"{{doc}}`notebooks/{notebook.stem}`" in text, f"{notebook.name} not listed"


def test_configuration_serves_mathjax_locally_and_fails_on_a_broken_notebook():
    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert "://" not in conf["mathjax_path"], "MathJax must come from the build, not a CDN"
    assert conf["mathjax_path"].startswith("mathjax/")
    assert conf["nb_execution_raise_on_error"] is True
    assert conf["nb_execution_timeout"] >= 300
    assert conf["nitpicky"] is True


def test_the_docs_extra_lists_what_the_build_needs():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r"^docs = \[(.*?)\]", pyproject, re.M | re.S)
    assert match, "pyproject.toml has no docs extra"
    extra = match.group(1).lower()
    for package in ("sphinx", "myst-nb", "numpydoc", "furo", "django-static-mathjax"):
        assert f'"{package}' in extra, f"the docs extra lacks {package}"


def test_the_readme_gives_the_one_command_that_builds_the_site():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = (
        'pip install ".[docs]" && python -m sphinx -W --keep-going -b html docs docs/_build/html'
    )
    assert command in readme, "the README's documentation section lost the build command"


def test_every_top_level_name_is_on_the_top_level_page():
    text = (API / "npcbam.md").read_text(encoding="utf-8")
    for name in npcbam.__all__:
        assert f"`npcbam.{name} <" in text, f"npcbam.{name} is missing from docs/api/npcbam.md"
