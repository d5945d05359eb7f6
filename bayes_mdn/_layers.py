"""The package's layers, in ONE place, and the checker that keeps imports pointing down.

Every module of bayes_mdn belongs to one layer of :data:`LAYERS` (bottom first). A module may
import, at module level, only from its own layer or the layers below it; an import upwards
would tie the layers into a circle (and, e.g., make ``import bayes_mdn`` load every
inference method). Function-level imports of a higher layer are allowed only in the facade
accessors of :data:`FACADES` (each says why in a comment where it imports).
``tests/test_layers.py`` runs :func:`check` on the package; a module missing from the table
fails it with a message saying to add it here.

Entries are module names relative to ``bayes_mdn``: ``"model"`` is ``bayes_mdn/model.py``,
``"inference"`` is ``bayes_mdn/inference/__init__.py`` only, and ``"predictive.*"`` is the
package ``bayes_mdn/predictive/`` with every module in it. ``""`` is ``bayes_mdn/__init__.py``.

This module imports nothing from the package (standard library only).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["FACADES", "LAYERS", "check", "function_imports", "layer_of", "module_graph",
           "upward_edges"]

#: (name, modules) from the bottom up.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground floor: validation, network, priors, progress",
     ("_validation", "_progress", "_compilation_cache", "_layers", "network", "priors")),
    ("specifications: families, feature networks, scaling, datasets",
     ("families", "feature_networks", "scaling", "datasets")),
    ("model: frozen MDN spec, NumPyro model, the likelihood", ("model",)),
    ("arrays in, arrays out: R-hat/ESS, Pareto k, reference rows, the file container",
     ("numerics", "_archive")),
    ("predictive: the one evaluator of draws x inputs, PredictiveMixture", ("predictive.*",)),
    # Recalibration maps, the recalibrated predictive and conformal sets build on the
    # PredictiveMixture; a Posterior carries a map and returns the recalibrated predictive.
    ("calibration: recalibration, conformal sets", ("calibration.*",)),
    ("posterior: the immutable result", ("posterior",)),
    ("readers of results: scores, reports, files, ArviZ",
     ("metrics", "_photoz_metrics", "_photoz_plots", "diagnostics", "_arviz", "io")),
    ("inference internals: data, optimisation loop, minibatches, checkpoints",
     ("inference._data", "inference._holdout", "inference._optim", "inference._minibatch",
      "inference._checkpoint")),
    ("inference methods: one module each",
     ("inference.map", "inference.svi", "inference.laplace", "inference.nuts",
      "inference.sgmcmc", "inference.log_density")),
    ("inference registry: METHODS, fit()", ("inference",)),
    ("public namespace, entry points, optional bridges",
     ("", "cli", "plotting", "sklearn", "dask", "qp", "tables", "stacking")),
)

#: (module, function) pairs whose function-level import of a higher layer is by design: the
#: facade accessors that hand a call on to the layer that implements it.
FACADES: frozenset[tuple[str, str]] = frozenset({
    ("model", "MDN.fit"),
    ("posterior", "Posterior.summary"),
    ("posterior", "Posterior.to_arviz"),
    ("posterior", "Posterior.save"),
    # The cross-fitted recalibration refits the posterior's own method on folds.
    ("calibration.recalibrated", "_default_fit_options"),
})

PACKAGE = "bayes_mdn"


def layer_of(module: str, layers: Iterable[tuple[str, tuple[str, ...]]] = LAYERS) -> int | None:
    """Index in `layers` of `module` (relative name, ``""`` for the package), or None."""
    for index, (_, members) in enumerate(layers):
        for member in members:
            if member.endswith(".*"):
                package = member[:-2]
                if module == package or module.startswith(package + "."):
                    return index
            elif module == member:
                return index
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             modules: set[str]) -> set[str]:
    """Relative names of the package modules an import statement loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        bases = [name for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")]
        return {name[len(PACKAGE) + 1:] for name in bases}
    if node.level:  # relative import: resolve against this module's package
        parts = [PACKAGE, *module.split(".")] if module else [PACKAGE]
        if not is_package:
            parts = parts[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base != PACKAGE and not base.startswith(PACKAGE + "."):
        return set()
    relative = base[len(PACKAGE) + 1:]
    found = set()
    for alias in node.names:  # ``from bayes_mdn import network`` loads bayes_mdn.network
        child = f"{relative}.{alias.name}" if relative else alias.name
        found.add(child if child in modules else relative)
    return found


def _module_names(root: Path) -> dict[str, Path]:
    """Relative module name -> file, for every ``.py`` file under the package `root`."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _visit(node: ast.AST, scope: str, in_function: bool):
    """(import node, scope) under `node`; scope is None for imports that run on import of
    the module (module level and class bodies; ``if TYPE_CHECKING:`` blocks excluded),
    else the qualified name of the enclosing function, e.g. ``"Posterior.save"``."""
    for child in ast.iter_child_nodes(node):
        qualified = f"{scope}.{getattr(child, 'name', '')}".lstrip(".")
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, (scope if in_function else None)
        elif isinstance(child, ast.If) and not in_function and _is_type_checking(child.test):
            for item in child.orelse:
                yield from _visit(ast.Module(body=[item], type_ignores=[]), scope, in_function)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _visit(child, qualified, True)
        elif isinstance(child, ast.ClassDef):
            yield from _visit(child, qualified, in_function)
        else:
            yield from _visit(child, scope, in_function)


def _walk(root: Path):
    """(module, is_package, import node, scope) for every import in the package at `root`."""
    for module, path in _module_names(root).items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, scope in _visit(tree, "", False):
            yield module, path.name == "__init__.py", node, scope


def module_graph(root: Path) -> dict[str, set[str]]:
    """Module-level imports between the package's modules: relative name -> imported names."""
    modules = set(_module_names(root))
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, is_package, node, scope in _walk(root):
        if scope is None:
            graph[module] |= _targets(node, module, is_package, modules) - {module}
    return graph


def function_imports(root: Path) -> dict[tuple[str, str], set[str]]:
    """Function-level imports of package modules: (module, "Class.function") -> names."""
    modules = set(_module_names(root))
    found: dict[tuple[str, str], set[str]] = {}
    for module, is_package, node, scope in _walk(root):
        if scope is not None:
            targets = _targets(node, module, is_package, modules) - {module}
            if targets:
                found.setdefault((module, scope), set()).update(targets)
    return found


def upward_edges(graph: Mapping[str, Iterable[str]],
                 layers: Iterable[tuple[str, tuple[str, ...]]] = LAYERS) -> list[str]:
    """Every import in `graph` that points up a layer, and every module not in `layers`.

    Returns
    -------
    list of str
        One readable line per problem; empty when the graph respects the layers.
    """
    layers = tuple(layers)
    problems = []
    for module in sorted(graph):
        if layer_of(module, layers) is None:
            problems.append(f"bayes_mdn.{module or '__init__'} is in no layer: add it to "
                            "LAYERS in bayes_mdn/_layers.py (the layer list lives there).")
    for module in sorted(graph):
        source = layer_of(module, layers)
        for target in sorted(graph[module]):
            destination = layer_of(target, layers)
            if source is None or destination is None:
                if destination is None and target not in graph:
                    problems.append(f"bayes_mdn.{module} imports bayes_mdn.{target}, which is "
                                    "in no layer: add it to LAYERS in bayes_mdn/_layers.py.")
                continue
            if destination > source:
                problems.append(
                    f"bayes_mdn.{module or '__init__'} ({layers[source][0].split(':')[0]}) "
                    f"imports bayes_mdn.{target or '__init__'} from a higher layer "
                    f"({layers[destination][0].split(':')[0]}) at module level."
                )
    return problems


def check(root: Path | None = None) -> list[str]:
    """Upward module-level imports, unknown modules and non-facade upward function-level
    imports of the package at `root` (default: this package)."""
    root = Path(__file__).parent if root is None else Path(root)
    problems = upward_edges(module_graph(root))
    for (module, scope), targets in sorted(function_imports(root).items()):
        source = layer_of(module)
        for target in sorted(targets):
            destination = layer_of(target)
            if (source is not None and destination is not None and destination > source
                    and (module, scope) not in FACADES):
                problems.append(
                    f"bayes_mdn.{module}: {scope} imports bayes_mdn.{target or '__init__'} "
                    "from a higher layer inside a function; only the facade accessors of "
                    "FACADES in bayes_mdn/_layers.py may. Move the code to the right layer."
                )
    return problems
