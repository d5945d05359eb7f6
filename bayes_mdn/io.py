"""Saving and loading a :class:`~bayes_mdn.Posterior`: arrays + JSON, never pickle.

File format (``format_version`` 1): a ZIP archive holding

* ``metadata.json``: ``{"format": "bayes_mdn.posterior", "format_version": 1, "model": ...,
  "method": ..., "info": ..., "versions": ..., "arrays": [names]}``;
* one ``.npy`` member per array: ``draws/<site>.npy`` (C, S, ...), ``history/<name>.npy``,
  ``sample_stats/<name>.npy`` (C, S; sampler statistics, NUTS only),
  ``linearised_at/<site>.npy`` (the linearisation point of a linearised Laplace fit),
  ``standardizer/<name>.npy`` and, for a recalibrated posterior, ``recalibration/<name>.npy``
  (the map's arrays; its kind and weight are ``metadata["recalibration"]``).

Arrays are read with ``allow_pickle=False`` and every member is CRC-checked by the ZIP
reader, so loading never executes code and a truncated or corrupted file is an error.
Writes go to a temporary file in the same folder, then ``os.replace`` it into place.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from bayes_mdn._archive import (  # re-exported: the container was defined here before
    FORMAT_NAME,
    FORMAT_VERSION,
    format_of,
    read_archive,
    write_archive,
)
from bayes_mdn.calibration.maps import map_from_dict
from bayes_mdn.model import MDN
from bayes_mdn.posterior import Posterior
from bayes_mdn.scaling import Standardizer

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "LOADERS", "load", "read_archive", "save",
           "write_archive"]

#: Readers of other archive formats that :func:`load` dispatches to by the ``format`` of
#: their metadata.json; a higher module registers its own (bayes_mdn.stacking: stacked fits).
LOADERS: dict[str, Callable[[Path], Any]] = {}


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def save(posterior: Posterior, path: str | os.PathLike) -> None:
    """Write `posterior` to `path` atomically (see the module docstring for the format).

    Parameters
    ----------
    posterior : Posterior
    path : str or path-like
        Destination; conventionally ends in ``.bmdn``. An existing file is replaced.
    """
    if not isinstance(posterior, Posterior):
        raise TypeError(f"`posterior` must be a bayes_mdn.Posterior; got {type(posterior)}.")
    destination = Path(path)
    if destination.is_dir():
        raise ValueError(f"{str(destination)!r} is a directory; pass a file path such as "
                         "'fit.bmdn'.")
    arrays: dict[str, np.ndarray] = {}
    arrays.update({f"draws/{k}": np.asarray(v) for k, v in posterior.draws.items()})
    arrays.update({f"history/{k}": np.asarray(v) for k, v in posterior.history.items()})
    arrays.update({f"sample_stats/{k}": np.asarray(v)
                   for k, v in posterior.sample_stats.items()})
    if posterior.linearised_at is not None:
        arrays.update({f"linearised_at/{k}": np.asarray(v)
                       for k, v in posterior.linearised_at.items()})
    arrays.update({f"standardizer/{k}": v
                   for k, v in posterior.standardizer.to_arrays().items()})
    recalibration = None
    if posterior.recalibration is not None:
        recalibration, map_arrays = posterior.recalibration.to_dict()
        arrays.update({f"recalibration/{k}": v for k, v in map_arrays.items()})
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "method": posterior.method,
        "kind": posterior.kind,
        "model": posterior.model.to_config(),
        "info": dict(posterior.info),
        "versions": {name: _version(name) for name in ("bayes-mdn", "jax", "numpyro")},
        "arrays": sorted(arrays),
    }
    if recalibration is not None:
        metadata["recalibration"] = recalibration
    write_archive(destination, metadata, arrays)


def load(path: str | os.PathLike) -> Posterior:
    """Load a posterior written by :meth:`bayes_mdn.Posterior.save`.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    Posterior
        Predictions from it are bit-identical to the saved one's. (A file written by
        :meth:`bayes_mdn.stacking.StackedPosterior.save` gives that StackedPosterior.)

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If the file is not a bayes_mdn file, is truncated or corrupted, or has an
        unsupported format version.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"No bayes_mdn file at {str(source)!r}.")
    reader = LOADERS.get(format_of(source))
    if reader is not None:  # e.g. a StackedPosterior
        return reader(source)
    metadata, arrays = read_archive(source)

    def group(prefix: str) -> dict[str, np.ndarray]:
        return {name[len(prefix) + 1:]: value for name, value in arrays.items()
                if name.startswith(prefix + "/")}

    try:
        model = MDN.from_config(metadata["model"])
        standardizer = Standardizer(**group("standardizer"))
    except (KeyError, TypeError) as error:
        raise ValueError(f"{str(source)!r} has an invalid model description: {error}") from None
    return Posterior(
        model=model,
        method=str(metadata["method"]),
        kind=metadata.get("kind"),  # None in files saved before Posterior had a kind
        draws={name: jnp.asarray(value) for name, value in group("draws").items()},
        standardizer=standardizer,
        history=group("history"),
        sample_stats=group("sample_stats"),
        info=metadata.get("info", {}),
        linearised_at=({name: jnp.asarray(value) for name, value in linearised.items()}
                       if (linearised := group("linearised_at")) else None),
        recalibration=(map_from_dict(metadata["recalibration"], group("recalibration"))
                       if "recalibration" in metadata else None),
    )
