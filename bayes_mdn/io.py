"""Saving and loading a :class:`~bayes_mdn.Posterior`: arrays + JSON, never pickle.

File format (``format_version`` 1): a ZIP archive holding

* ``metadata.json``: ``{"format": "bayes_mdn.posterior", "format_version": 1, "model": ...,
  "method": ..., "info": ..., "versions": ..., "arrays": [names]}``;
* one ``.npy`` member per array: ``draws/<site>.npy`` (C, S, ...), ``history/<name>.npy``,
  ``sample_stats/<name>.npy`` (C, S; sampler statistics, NUTS only),
  ``linearised_at/<site>.npy`` (the linearisation point of a linearised Laplace fit) and
  ``standardizer/<name>.npy``.

Arrays are read with ``allow_pickle=False`` and every member is CRC-checked by the ZIP
reader, so loading never executes code and a truncated or corrupted file is an error.
Writes go to a temporary file in the same folder, then ``os.replace`` it into place.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from bayes_mdn.model import MDN
from bayes_mdn.posterior import Posterior
from bayes_mdn.scaling import Standardizer

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "LOADERS", "load", "read_archive", "save",
           "write_archive"]

FORMAT_NAME = "bayes_mdn.posterior"
FORMAT_VERSION = 1
_METADATA = "metadata.json"
#: Readers of other archive formats that :func:`load` dispatches to by the ``format`` of
#: their metadata.json; a higher module registers its own (bayes_mdn.stacking: stacked fits).
LOADERS: dict[str, Callable[[Path], Any]] = {}


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.ndarray, jnp.ndarray)):
        return np.asarray(value).tolist()
    return repr(value)


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
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "method": posterior.method,
        "model": posterior.model.to_config(),
        "info": dict(posterior.info),
        "versions": {name: _version(name) for name in ("bayes-mdn", "jax", "numpyro")},
        "arrays": sorted(arrays),
    }
    write_archive(destination, metadata, arrays)


def write_archive(destination: Path, metadata: dict[str, Any],
                  arrays: dict[str, np.ndarray]) -> None:
    """Write ``metadata.json`` + one ``.npy`` per array to a ZIP file, atomically.

    The archive is written to a temporary file in the destination's folder, flushed to disk,
    then renamed over `destination` with ``os.replace``; on any error the temporary file is
    removed and an existing `destination` is left untouched.
    """
    handle, temporary = tempfile.mkstemp(dir=destination.parent or ".", prefix=".bmdn-",
                                         suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(_METADATA, json.dumps(metadata, indent=1,
                                                       default=_json_default))
                for name, array in arrays.items():
                    buffer = io.BytesIO()
                    # (np.ascontiguousarray would turn a 0-d array into shape (1,).)
                    np.lib.format.write_array(buffer, np.asarray(array, order="C"),
                                              allow_pickle=False)
                    archive.writestr(f"{name}.npy", buffer.getvalue())
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates the file readable by its owner only; give it the permissions of
        # the file it replaces, or the usual rw-r--r--.
        mode = destination.stat().st_mode & 0o777 if destination.exists() else 0o644
        os.chmod(temporary, mode)
        os.replace(temporary, destination)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


#: What each file format is for, to say so when one is passed where the other is expected.
_KINDS = {FORMAT_NAME: "a saved posterior: load it with bayes_mdn.load",
          "bayes_mdn.checkpoint": "a fit checkpoint: continue it with fit(..., resume=path)"}


def read_archive(path: Path, format_name: str = FORMAT_NAME, format_version: int = FORMAT_VERSION
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and check an archive written by :func:`write_archive`.

    Raises
    ------
    ValueError
        If the file is not a ZIP archive of the expected format and version, or is
        truncated or corrupted (every member is CRC-checked).
    """
    kind = "posterior" if format_name == FORMAT_NAME else "checkpoint"
    try:
        with zipfile.ZipFile(path, "r") as archive:
            names = set(archive.namelist())
            if _METADATA not in names:
                raise ValueError(f"{str(path)!r} is not a bayes_mdn file (no {_METADATA}).")
            metadata = json.loads(archive.read(_METADATA).decode("utf-8"))
            found = metadata.get("format") if isinstance(metadata, dict) else None
            if found != format_name:
                other = f" It is {_KINDS[found]}." if found in _KINDS else ""
                raise ValueError(f"{str(path)!r} is not a bayes_mdn {kind} file.{other}")
            version = metadata.get("format_version")
            if version != format_version:
                raise ValueError(
                    f"{str(path)!r} has format version {version!r}; this bayes_mdn reads "
                    f"version {format_version}. Upgrade bayes_mdn to load newer files."
                )
            arrays = {}
            for name in metadata["arrays"]:
                member = f"{name}.npy"
                if member not in names:
                    raise ValueError(f"{str(path)!r} is incomplete: array {name!r} is missing.")
                arrays[name] = np.lib.format.read_array(io.BytesIO(archive.read(member)),
                                                        allow_pickle=False)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, UnicodeDecodeError,
            json.JSONDecodeError, KeyError, TypeError, zipfile.LargeZipFile) as error:
        raise ValueError(
            f"{str(path)!r} is not a readable bayes_mdn file (truncated or corrupted?): {error}"
        ) from None
    except OSError as error:  # e.g. a corrupted header pointing past the end of the file
        if error.errno != errno.EINVAL:
            raise
        raise ValueError(
            f"{str(path)!r} is not a readable bayes_mdn file (truncated or corrupted?): {error}"
        ) from None
    return metadata, arrays


def _format_of(path: Path) -> str | None:
    """The ``format`` named in an archive's metadata.json, or None if unreadable."""
    try:
        with zipfile.ZipFile(path, "r") as archive:
            metadata = json.loads(archive.read(_METADATA).decode("utf-8"))
    except Exception:  # read_archive reports what is wrong with the file
        return None
    return metadata.get("format") if isinstance(metadata, dict) else None


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
    reader = LOADERS.get(_format_of(source))
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
        draws={name: jnp.asarray(value) for name, value in group("draws").items()},
        standardizer=standardizer,
        history=group("history"),
        sample_stats=group("sample_stats"),
        info=metadata.get("info", {}),
        linearised_at=({name: jnp.asarray(value) for name, value in linearised.items()}
                       if (linearised := group("linearised_at")) else None),
    )
