"""A small local Sphinx extension for the npcbam documentation.

It does four things:

1. **Notebooks.** Sphinx reads sources only from ``docs/``; the notebooks live in
   ``notebooks/``. At ``config-inited`` a symbolic link ``docs/notebooks -> ../notebooks``
   is made, so myst-nb renders and executes the real files, with the kernel's working
   directory in ``notebooks/`` as when a reader runs them (notebook 7 finds the committed
   PyTorch fixtures from there). Links between notebooks, written ``[text](02_name.ipynb)``
   so that they work in Jupyter, are turned into document names when a notebook is read.
2. **Offline MathJax.** MathJax 3 is copied from an installed package
   (``django-static-mathjax``, static files only, no dependencies) into
   ``_static/mathjax/`` of the build, so formulas typeset without any network access.
3. **Aliases.** Every object is documented once, in the module that defines it
   (``npcbam.nn.cbam.CBAM``). References through the names users import
   (``npcbam.CBAM``, ``npcbam.nn.CBAM``, ``npcbam.ops.sigmoid_forward``) are resolved to
   that documentation by following the import.
"""

from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parents[1]
NOTEBOOKS = DOCS.parent / "notebooks"
NOTEBOOK_LINK = DOCS / "notebooks"
# a link from one notebook to another as written for Jupyter: [text](02_name.ipynb)
NOTEBOOK_HREF = re.compile(r"\]\((\d\d_\w+)\.ipynb\)")

# the parts of MathJax's es5 bundle a page needs: the TeX-to-CommonHTML component, its fonts,
# the TeX extensions it may autoload, and the menu with its accessibility helpers
MATHJAX_ENTRY = "tex-chtml.js"
MATHJAX_PARTS = (MATHJAX_ENTRY, "input", "output/chtml", "ui", "a11y", "sre", "adaptors")


# -- 1. notebooks ---------------------------------------------------------------------------------
def link_notebooks(app: Sphinx, config) -> None:
    """Make ``docs/notebooks`` a symbolic link to ``notebooks/``."""
    if NOTEBOOK_LINK.is_symlink():
        if NOTEBOOK_LINK.resolve() == NOTEBOOKS.resolve():
            return
        NOTEBOOK_LINK.unlink()
    if NOTEBOOK_LINK.exists():
        raise ExtensionError(f"{NOTEBOOK_LINK} exists and is not a link to {NOTEBOOKS}")
    try:
        NOTEBOOK_LINK.symlink_to(Path("..") / "notebooks", target_is_directory=True)
    except OSError as error:
        raise ExtensionError(
            f"cannot link {NOTEBOOK_LINK} to ../notebooks ({error}); the notebooks must run "
            "from their own folder, so a copy would not do: enable symbolic links"
        ) from error


def notebook_links_as_documents(app: Sphinx, docname: str, source: list[str]) -> None:
    """Turn a notebook's links to its neighbours, ``[text](02_name.ipynb)``, into document
    names, ``[text](02_name)``: Sphinx resolves ``docs/notebooks`` to the real folder, which
    lies outside ``docs/``, so the file path itself would not name a document."""
    if docname.startswith("notebooks/"):
        source[0] = NOTEBOOK_HREF.sub(r"](\1)", source[0])


# -- 2. offline MathJax ---------------------------------------------------------------------------
def mathjax_source() -> Path:
    """The es5 directory of the installed MathJax 3 (package ``django-static-mathjax``)."""
    try:
        import mathjax  # installed by django-static-mathjax: MathJax's files, nothing else
    except ImportError as error:
        raise ExtensionError(
            "MathJax is not installed; the docs serve it themselves, never from a CDN. "
            'Install the docs extra: pip install ".[docs]"'
        ) from error
    es5 = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"
    if not (es5 / MATHJAX_ENTRY).is_file():
        raise ExtensionError(f"no {MATHJAX_ENTRY} in {es5}: unexpected MathJax package layout")
    return es5


def copy_mathjax(app: Sphinx, exception) -> None:
    """Copy MathJax into ``_static/mathjax`` of an HTML build (skipped when up to date)."""
    if exception is not None or app.builder.format != "html":
        return
    source = mathjax_source()
    target = Path(app.outdir) / "_static" / "mathjax"
    stamp = target / ".source"
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == str(source):
        return
    shutil.rmtree(target, ignore_errors=True)
    for part in MATHJAX_PARTS:
        origin = source / part
        if origin.is_dir():
            shutil.copytree(origin, target / part)
        elif origin.is_file():
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target / part)
    shutil.copy2(source.parent / "LICENSE", target / "LICENSE")
    stamp.write_text(str(source), encoding="utf-8")


def check_mathjax_installed(app: Sphinx) -> None:
    """Fail early (not after executing every notebook) when MathJax is missing."""
    if app.builder.format == "html":
        mathjax_source()


# -- 3. aliases -----------------------------------------------------------------------------------
def canonical_name(dotted: str) -> str | None:
    """Follow the imports of ``dotted`` to where the object is defined.

    ``npcbam.CBAM`` -> ``npcbam.nn.cbam.CBAM``; ``npcbam.nn.Module.grads`` (a property)
    -> ``npcbam.nn.module.Module.grads``. None when ``dotted`` is not an npcbam object.
    """
    if not dotted.startswith("npcbam"):
        return None
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        rest = parts[split:]
        break
    else:
        return None
    if not rest:
        return obj.__name__  # a module
    base, tail = None, []
    for name in rest:
        try:
            obj = getattr(obj, name)
        except AttributeError:
            return None
        qualname, module = getattr(obj, "__qualname__", None), getattr(obj, "__module__", None)
        if isinstance(qualname, str) and isinstance(module, str) and not tail:
            base = f"{module}.{qualname}"
        else:
            tail.append(name)  # a property or attribute: named through its owner
    if base is None:
        return None
    return ".".join([base, *tail])


def _inherited(module: str | None, cls: str | None, target: str) -> list[str]:
    """``target`` as a member of each base class of the class ``module.cls``."""
    if not (module and cls):
        return []
    try:
        owner = importlib.import_module(module)
        for name in cls.split("."):
            owner = getattr(owner, name)
    except (ImportError, AttributeError):
        return []
    return [f"{base.__module__}.{base.__qualname__}.{target}" for base in owner.__mro__[1:]]


def resolve_alias(app: Sphinx, env, node, contnode):
    """Resolve a Python reference to an alias of a documented object.

    Tried in order: the target as written, relative to the current module and class, as a
    member inherited from a base class, and last the one documented npcbam object whose
    name ends with the target (``SGD`` from a sibling module).
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module:
        candidates.append(f"{module}.{target}")
        if cls:
            candidates.append(f"{module}.{cls}.{target}")
    domain = env.get_domain("py")
    names = [canonical_name(candidate) for candidate in candidates]
    names += _inherited(module, cls, target)
    suffix = [name for name in domain.objects if name.endswith(f".{target}")]
    if len(suffix) == 1 and suffix[0].startswith("npcbam."):
        names.append(suffix[0])
    for name in names:
        if name and name in domain.objects:
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
            )
    return None


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", link_notebooks)
    app.connect("source-read", notebook_links_as_documents)
    app.connect("builder-inited", check_mathjax_installed)
    app.connect("build-finished", copy_mathjax)
    app.connect("missing-reference", resolve_alias)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
