"""Dependencies point down the layers of bayes_mdn/_layers.py (the one place the list lives)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bayes_mdn import _layers

PACKAGE_ROOT = Path(_layers.__file__).parent

SMALL_LAYERS = (("ground", ("_validation",)), ("model", ("model",)),
                ("predictive", ("predictive.*",)), ("top", ("", "cli")))


def test_package_has_no_upward_import():
    problems = _layers.check()
    assert problems == [], "\n".join(problems)


def test_every_module_is_in_the_table():
    graph = _layers.module_graph(PACKAGE_ROOT)
    missing = [module for module in graph if _layers.layer_of(module) is None]
    assert missing == []
    assert _layers.layer_of("predictive.mixture") == _layers.layer_of("predictive")
    assert _layers.layer_of("model") < _layers.layer_of("posterior") < _layers.layer_of("io")
    assert _layers.layer_of("numerics") < _layers.layer_of("diagnostics")
    assert _layers.layer_of("numerics") < _layers.layer_of("inference._data")
    assert _layers.layer_of("_archive") < _layers.layer_of("inference._checkpoint")


def test_synthetic_graph_passes_then_fails_with_an_upward_edge():
    graph = {"": {"model", "cli"}, "cli": {"predictive"}, "predictive": {"model"},
             "predictive.kernels": {"model", "_validation"}, "model": {"_validation"},
             "_validation": set()}
    assert _layers.upward_edges(graph, SMALL_LAYERS) == []
    graph["model"] = {"_validation", "predictive.kernels"}  # the model reaches up
    problems = _layers.upward_edges(graph, SMALL_LAYERS)
    assert len(problems) == 1
    assert "bayes_mdn.model (model) imports bayes_mdn.predictive.kernels from a higher " \
           "layer (predictive)" in problems[0]


def test_synthetic_graph_with_an_unknown_module_fails_with_advice():
    graph = {"model": {"_validation"}, "_validation": set(), "newthing": {"model"}}
    problems = _layers.upward_edges(graph, SMALL_LAYERS)
    assert problems == ["bayes_mdn.newthing is in no layer: add it to LAYERS in "
                        "bayes_mdn/_layers.py (the layer list lives there)."]


def test_parser_reads_module_level_imports_only(tmp_path, monkeypatch):
    """On a synthetic package on disk: module-level and relative imports are edges;
    ``if TYPE_CHECKING:`` and function-level imports are not (the latter are listed apart)."""
    root = tmp_path / "bayes_mdn"
    (root / "predictive").mkdir(parents=True)
    files = {
        "__init__.py": "from bayes_mdn import model\nfrom bayes_mdn.predictive import X\n",
        "_validation.py": "import numpy\n",
        "model.py": """
            from typing import TYPE_CHECKING
            from bayes_mdn._validation import check
            if TYPE_CHECKING:
                from bayes_mdn.predictive import Mixture

            class MDN:
                def fit(self):
                    from bayes_mdn import cli
            """,
        "predictive/__init__.py": "from .kernels import run\n",
        "predictive/kernels.py": "from .. import model\nimport bayes_mdn._validation\n",
        "cli.py": "import bayes_mdn\n",
    }
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    graph = _layers.module_graph(root)
    assert graph == {"": {"model", "predictive"}, "_validation": set(),
                     "model": {"_validation"}, "predictive": {"predictive.kernels"},
                     "predictive.kernels": {"model", "_validation"}, "cli": {""}}
    assert _layers.function_imports(root) == {("model", "MDN.fit"): {"cli"}}
    assert _layers.upward_edges(graph, SMALL_LAYERS) == []
    (root / "_validation.py").write_text("from bayes_mdn.model import MDN\n")
    problems = _layers.upward_edges(_layers.module_graph(root), SMALL_LAYERS)
    assert len(problems) == 1 and "bayes_mdn._validation (ground) imports bayes_mdn.model" \
        in problems[0]


def test_check_flags_a_non_facade_function_level_import_upwards(tmp_path, monkeypatch):
    root = tmp_path / "bayes_mdn"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "model.py").write_text("def helper():\n    from bayes_mdn import io\n")
    (root / "io.py").write_text("from bayes_mdn import model\n")
    problems = _layers.check(root)
    assert problems == ["bayes_mdn.model: helper imports bayes_mdn.io from a higher layer "
                        "inside a function; only the facade accessors of FACADES in "
                        "bayes_mdn/_layers.py may. Move the code to the right layer."]


def test_import_bayes_mdn_loads_no_inference_method():
    """``import bayes_mdn`` loads neither the inference methods nor optax nor arviz.
    (numpyro's MCMC module is loaded by ``import numpyro`` itself, which the model needs.)"""
    code = ("import sys, bayes_mdn; print(sorted(name for name in "
            "('optax', 'arviz', 'bayes_mdn.inference', 'matplotlib') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PACKAGE_ROOT.parent, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["diagnostics", "_arviz", "io", "inference._data"])
def test_moved_names_stay_importable(module):
    import importlib

    names = {"diagnostics": ("pareto_k", "reference_indices", "REFERENCE_POINTS",
                             "MAX_REFERENCE_CANDIDATES"),
             "_arviz": ("rhat_ess",), "io": ("read_archive", "write_archive", "FORMAT_NAME"),
             "inference._data": ("point_log_prob", "mean_log_likelihood",
                                 "predictive_log_likelihood")}[module]
    loaded = importlib.import_module(f"bayes_mdn.{module}")
    for name in names:
        assert hasattr(loaded, name)
