"""Sphinx configuration for the bayes_mdn documentation.

Build: ``pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html``.
The notebooks in ``notebooks/`` (MyST markdown, linked here as ``docs/notebooks``) are
executed during the build and cached by content in ``docs/_build/.jupyter_cache``, so a
rebuild re-runs only notebooks whose code changed and outputs are never committed.
"""

from __future__ import annotations

import os
from pathlib import Path

import bayes_mdn

project = "bayes_mdn"
author = "bayes_mdn developers"
copyright = "bayes_mdn developers"
release = bayes_mdn.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_nb",
]
try:  # optional: a copy button on code blocks
    import sphinx_copybutton  # noqa: F401
except ImportError:
    pass
else:
    extensions.append("sphinx_copybutton")

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# --- API reference: one page per public name, driven by each module's __all__ -------------
autosummary_generate = True
autosummary_ignore_module_all = False  # document exactly __all__ (imported names included)
autosummary_imported_members = False
autodoc_typehints = "none"  # numpydoc docstrings carry the types and shapes
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
numpydoc_show_class_members = False  # the class template lists members itself
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# --- MyST and notebooks ---------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "substitution"]
myst_heading_anchors = 3
nb_execution_mode = os.environ.get("BAYES_MDN_DOCS_EXECUTE", "cache")  # "off" for a quick build
nb_execution_timeout = 1200  # seconds per cell (generous: shared, loaded CPUs)
nb_execution_raise_on_error = True  # a failing notebook fails the build
nb_execution_show_tb = True
nb_execution_cache_path = str(Path(__file__).parent / "_build" / ".jupyter_cache")
nb_merge_streams = True
nb_render_markdown_format = "gfm"  # Markdown outputs (result tables) may hold tables

# --- HTML -----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = "bayes_mdn"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False


# --- autodoc: leave out scikit-learn's generated metadata-routing methods -------------------
def _skip_sklearn_request_methods(app, what, name, obj, skip, options):
    """``set_fit_request`` / ``set_score_request`` (scikit-learn writes them on every
    estimator whose ``fit``/``score`` take extra arguments): their docstrings cite
    scikit-learn's own glossary and labels, which do not exist here (warnings under -W)."""
    if what == "class" and name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_sklearn_request_methods)
