"""Sphinx configuration of the npcbam documentation.

Build (warnings are errors; the notebooks are executed, and a failing one fails the build):

    pip install ".[docs]" && python -m sphinx -W --keep-going -b html docs docs/_build/html

Everything is served from the build itself, MathJax included: the site reads offline.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import npcbam  # noqa: E402  (after the path setup; npcbam itself is installed)

project = "npcbam"
author = "the npcbam authors"
copyright = "npcbam authors, MIT licence"
version = release = npcbam.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
    "npcbam_docs",  # docs/_ext: notebooks link, offline MathJax, alias references
]

# -- sources ---------------------------------------------------------------------------------------
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "_ext",
    "**/.ipynb_checkpoints",
    "notebooks/*.md",  # only the notebooks themselves are pages
]
# every Python cross-reference must resolve: a renamed function breaks the build
nitpicky = True
nitpick_ignore_regex = [
    # numpydoc and autodoc name these types in signatures; they live outside npcbam
    ("py:class", r"(np|numpy)\..*"),
    ("py:class", r"(collections\.abc|typing)\..*"),
    ("py:mod", r"math"),  # the standard library's
    ("py:attr", r"steps"),  # an optimizer's step count: listed under Attributes, no entry
]

# -- MyST and notebooks ----------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# every build executes every notebook, as a reader would; NPCBAM_DOCS_EXECUTE=off gives a
# quick draft of the prose (notebooks shown without outputs)
nb_execution_mode = os.environ.get("NPCBAM_DOCS_EXECUTE", "force")
nb_execution_raise_on_error = True  # a failing notebook fails the build
nb_execution_timeout = 600  # seconds per cell; the whole set takes well under a minute
nb_execution_show_tb = True  # on failure, the traceback is in the build log
nb_merge_streams = True

# -- API reference (autodoc + numpydoc) ------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc sections already give types and shapes
add_module_names = False
numpydoc_show_class_members = False  # autodoc's :members: lists them, once
numpydoc_class_members_toctree = False

# -- maths: MathJax 3, served from the build (never a CDN) -----------------------------------------
mathjax_path = "mathjax/tex-chtml.js"  # relative to _static; copied there by npcbam_docs
mathjax3_config = {
    # MyST marks the maths it parsed; MathJax typesets those elements only (the same value
    # MyST would set: given here so that MathJax 3's configuration block is the one written)
    "options": {"processHtmlClass": "tex2jax_process|mathjax_process|math|output_area"},
}

# -- HTML ------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"npcbam {release}"
html_static_path = ["_static"]
html_css_files = ["npcbam.css"]
html_theme_options = {"navigation_with_keys": True}
html_show_sourcelink = False
html_copy_source = False
templates_path: list[str] = []
