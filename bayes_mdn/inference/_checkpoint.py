"""Checkpoints of long fits: write the optimiser or sampler state part-way, resume later.

Usage (MAP, ensembles, SVI, the MAP stage of Laplace, and NUTS)::

    post = model.fit(X, y, key=key, method="svi", num_steps=20_000,
                     checkpoint="run.ckpt", checkpoint_every=1000)
    # ... the process dies at step 13 500; later, the same call plus `resume`:
    post = model.fit(X, y, key=key, method="svi", num_steps=20_000,
                     checkpoint="run.ckpt", checkpoint_every=1000, resume="run.ckpt")

``checkpoint`` is written every ``checkpoint_every`` optimisation steps (MAP, SVI) or kept
draws per chain (NUTS; the first write is at the end of warm-up), and at the end of the fit.
``resume`` continues from a checkpoint: the result is the one the uninterrupted run gives
(bit for bit on the same machine and library versions). ``num_steps`` / ``num_samples`` may
be larger than when the checkpoint was written, which extends a finished run: N steps,
then resume with 2N, equals one run of 2N steps. Everything else must match the run that
wrote the checkpoint: the model, the data, the key and the options that change the
computation (a mismatch is a ValueError naming what differs).

File format (``format_version`` 1): the same container as saved posteriors (a ZIP archive of
``metadata.json`` and ``.npy`` arrays, read with ``allow_pickle=False``, written atomically),
with ``"format": "bayes_mdn.checkpoint"``. ``metadata.json`` holds ``method``,
``signature`` (what must match to resume), ``num_done`` and ``key_leaves``; the arrays are
``state/<i>`` (the leaves of the sampler or optimiser state pytree in flattening order; PRNG
keys stored as their raw ``key_data`` with their implementation name), plus for
optimisation ``average/<i>`` (the moving average of the iterates) and ``history/*``, and for
NUTS the draws ``draws/<site>`` (C, n, ...) and sampler statistics ``stats/<field>`` (C, n)
collected so far.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bayes_mdn._archive import read_archive, write_archive
from bayes_mdn._validation import check_positive_int

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointPlan", "check_options",
           "checkpoint_plan"]

CHECKPOINT_FORMAT = "bayes_mdn.checkpoint"
CHECKPOINT_VERSION = 1

#: Options that never change the computed trajectory: they may differ on resume.
_FREE_OPTIONS = {"num_steps", "num_samples", "checkpoint", "checkpoint_every", "resume",
                 "progress", "num_evaluations", "init", "init_scale", "chain_method",
                 "num_draws", "num_eval_draws", "shard_data"}


def check_options(options: Any, unit: str) -> None:
    """Validate the ``checkpoint``, ``checkpoint_every`` and ``resume`` fields of an options
    dataclass (`unit` names what ``checkpoint_every`` counts, for messages)."""
    for name in ("checkpoint", "resume"):
        value = getattr(options, name)
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"`{name}` must be a file path (str or os.PathLike); got "
                            f"{type(value).__name__}.")
    if options.checkpoint_every is not None:
        check_positive_int(options.checkpoint_every, "checkpoint_every")
        if options.checkpoint is None:
            raise ValueError("`checkpoint_every` needs `checkpoint`, the file to write, e.g. "
                             f"checkpoint='run.ckpt', checkpoint_every=1000 ({unit}).")


def _normalise(value: Any) -> Any:
    """JSON-comparable form of an option or configuration value."""
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if callable(value):
        return "callable"
    # Reprs of functions carry memory addresses that differ between processes.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _fingerprint(*arrays: jax.Array) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        host = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{host.shape}{host.dtype}".encode())
        digest.update(host.tobytes())
    return digest.hexdigest()


def _key_record(key: jax.Array) -> dict[str, Any]:
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return {"impl": str(jax.random.key_impl(key)),
                "data": np.asarray(jax.random.key_data(key)).tolist()}
    return {"impl": "raw", "data": np.asarray(key).tolist()}


def _signature(method: str, model: Any, data: Any, key: jax.Array, options: Any
               ) -> dict[str, Any]:
    relevant = {field.name: getattr(options, field.name) for field in fields(options)
                if field.name not in _FREE_OPTIONS}
    if relevant.get("lr_schedule") == "cosine":
        relevant["num_steps"] = options.num_steps  # the schedule is laid out over num_steps
    return _normalise({"method": method, "model": model.to_config(),
                       "data": _fingerprint(data.X, data.y,
                                            *data.standardizer.to_arrays().values()),
                       "key": _key_record(key),
                       "options": relevant})


def _differences(saved: Any, current: Any, path: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for name in sorted(set(saved) | set(current)):
            found += _differences(saved.get(name), current.get(name),
                                  f"{path}.{name}" if path else name)
        return found
    return [] if saved == current else [f"{path} (checkpoint: {saved!r}, now: {current!r})"]


# --------------------------------------------------------------------------- pytrees
def pack_tree(prefix: str, tree: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Host arrays ``{prefix/i: leaf}`` of a pytree, PRNG keys as raw key data.

    Returns the arrays and ``{prefix/i: impl}`` for the leaves that are typed PRNG keys.
    """
    arrays, keys = {}, {}
    for index, leaf in enumerate(jax.tree.leaves(tree)):
        name = f"{prefix}/{index}"
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            keys[name] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        arrays[name] = np.asarray(jax.device_get(leaf))
    return arrays, keys


def unpack_tree(prefix: str, template: Any, arrays: dict[str, np.ndarray],
                keys: dict[str, str], path: Path) -> Any:
    """Inverse of :func:`pack_tree`, checked leaf by leaf against `template` (arrays or
    ``jax.ShapeDtypeStruct`` leaves, e.g. from ``jax.eval_shape``)."""
    leaves, treedef = jax.tree.flatten(template)
    stored = sorted((name for name in arrays if name.startswith(prefix + "/")),
                    key=lambda name: int(name.rsplit("/", 1)[1]))
    if len(stored) != len(leaves):
        raise ValueError(f"{str(path)!r} holds a {prefix} of {len(stored)} arrays, but this fit "
                         f"has {len(leaves)}: it was written by a differently configured fit.")
    restored = []
    for name, leaf in zip(stored, leaves, strict=True):
        value = arrays[name]
        is_key = jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        expected = jax.eval_shape(jax.random.key_data, leaf) if is_key else leaf
        if value.shape != expected.shape or value.dtype != expected.dtype:
            raise ValueError(
                f"{str(path)!r}: array {name!r} has shape {value.shape} and dtype {value.dtype}, "
                f"but this fit needs {expected.shape} and {expected.dtype} (another model, "
                "method or floating-point precision?).")
        if is_key:
            restored.append(jax.random.wrap_key_data(value, impl=keys.get(name, "threefry2x32")))
        else:
            restored.append(jax.device_put(value))
    return jax.tree.unflatten(treedef, restored)


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True, eq=False)
class CheckpointPlan:
    """Where to write checkpoints and what was resumed, for one fit.

    Attributes
    ----------
    path : Path or None
        The checkpoint file to write.
    every : int or None
        Steps (or draws per chain) between writes; None writes only at the end.
    signature : dict
        What a resumed run must match.
    resumed : dict or None
        ``{"metadata": ..., "arrays": ..., "path": ...}`` of the checkpoint resumed from.
    """

    path: Path | None
    every: int | None
    signature: dict[str, Any]
    resumed: dict[str, Any] | None = None

    @property
    def num_done(self) -> int:
        """Steps or draws per chain already done (0 for a fresh run)."""
        return 0 if self.resumed is None else int(self.resumed["metadata"]["num_done"])

    def next_stop(self, first: int, stop: int) -> int:
        """`stop` shortened to the next checkpoint boundary after `first`, if sooner."""
        if self.path is None or self.every is None:
            return stop
        return min(stop, (first // self.every + 1) * self.every)

    def due(self, done: int, total: int) -> bool:
        """Whether a checkpoint is written after `done` of `total` steps or draws."""
        if self.path is None:
            return False
        return done == total or (self.every is not None and done % self.every == 0)

    def restore(self, prefix: str, template: Any) -> Any:
        """The resumed checkpoint's `prefix` pytree, shaped like `template`."""
        resumed = self.resumed
        return unpack_tree(prefix, template, resumed["arrays"],
                           resumed["metadata"].get("key_leaves", {}), resumed["path"])

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The resumed checkpoint's arrays under ``prefix/``, keyed by the rest of the name."""
        return {name[len(prefix) + 1:]: value for name, value in self.resumed["arrays"].items()
                if name.startswith(prefix + "/")}

    def write(self, num_done: int, trees: dict[str, Any], arrays: dict[str, np.ndarray]
              ) -> None:
        """Write the checkpoint atomically: pytrees (packed) plus plain arrays."""
        everything: dict[str, np.ndarray] = {}
        key_leaves: dict[str, str] = {}
        for prefix, tree in trees.items():
            packed, keys = pack_tree(prefix, tree)
            everything.update(packed)
            key_leaves.update(keys)
        everything.update({name: np.asarray(value) for name, value in arrays.items()})
        metadata = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                    "method": self.signature["method"], "num_done": int(num_done),
                    "signature": self.signature, "key_leaves": key_leaves,
                    "arrays": sorted(everything)}
        write_archive(self.path, metadata, everything)


def checkpoint_plan(method: str, model: Any, data: Any, key: jax.Array, options: Any,
                    total: int) -> CheckpointPlan | None:
    """The checkpoint plan of a fit (None without ``checkpoint`` and ``resume``).

    Parameters
    ----------
    method : str
        The method whose state is checkpointed ("map", "ensemble", "svi" or "nuts").
    model, data, key, options
        The fit's inputs; they make up the signature a resumed run must match.
    total : int
        ``num_steps`` or ``num_samples`` of this run.

    Raises
    ------
    FileNotFoundError
        If `options.resume` does not exist.
    ValueError
        If it is not a readable checkpoint, was written by another method, model, data, key
        or options, or holds more steps or draws than `total`.
    """
    if options.checkpoint is None and options.resume is None:
        return None
    signature = _signature(method, model, data, key, options)
    path = None if options.checkpoint is None else Path(options.checkpoint)
    if path is not None and path.is_dir():
        raise ValueError(f"`checkpoint` {str(path)!r} is a directory; pass a file path such as "
                         "'run.ckpt'.")
    resumed = None
    if options.resume is not None:
        source = Path(options.resume)
        if not source.is_file():
            raise FileNotFoundError(f"No bayes_mdn checkpoint at {str(source)!r} to resume.")
        metadata, arrays = read_archive(source, CHECKPOINT_FORMAT, CHECKPOINT_VERSION)
        saved = metadata.get("signature")
        if not isinstance(saved, dict) or not isinstance(metadata.get("num_done"), int):
            raise ValueError(f"{str(source)!r} is not a readable bayes_mdn checkpoint "
                             "(no signature or progress).")
        if saved.get("method") != method:
            raise ValueError(f"{str(source)!r} is a checkpoint of method="
                             f"{saved.get('method')!r}; it cannot resume method={method!r}.")
        differences = _differences(saved, signature)
        if differences:
            raise ValueError(
                f"{str(source)!r} was written by a different run: "
                f"{'; '.join(differences)}. Resume with the same model, data, key and options "
                "(only num_steps / num_samples and the checkpoint options may change)."
            )
        if metadata["num_done"] > total:
            unit = "draws per chain" if method == "nuts" else "steps"
            count = "num_samples" if method == "nuts" else "num_steps"
            raise ValueError(f"{str(source)!r} already holds {metadata['num_done']} {unit}; "
                             f"pass {count} >= {metadata['num_done']} to resume it.")
        resumed = {"metadata": metadata, "arrays": arrays, "path": source}
    return CheckpointPlan(path=path, every=options.checkpoint_every, signature=signature,
                          resumed=resumed)
