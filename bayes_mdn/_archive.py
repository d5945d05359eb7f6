"""The file container shared by saved posteriors (:mod:`bayes_mdn.io`) and fit checkpoints
(:mod:`bayes_mdn.inference._checkpoint`): a ZIP archive of ``metadata.json`` plus one
``.npy`` member per array, written atomically, read without pickle and CRC-checked.

It knows nothing of Posteriors or fits (metadata is a JSON-able dict, arrays a dict of
NumPy arrays), so both io and the checkpoints sit above it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import jax
import numpy as np

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "atomic_file", "format_of", "read_archive",
           "write_archive"]

#: The format of a saved posterior (a checkpoint's is ``"bayes_mdn.checkpoint"``).
FORMAT_NAME = "bayes_mdn.posterior"
FORMAT_VERSION = 1
_METADATA = "metadata.json"


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    return repr(value)


@contextlib.contextmanager
def atomic_file(destination: Path) -> Iterator[BinaryIO]:
    """A binary stream whose bytes replace `destination` only if the block completes.

    The stream is a temporary file in the destination's folder; on leaving the block it is
    flushed to disk, given the permissions of the file it replaces (or the usual
    rw-r--r--; mkstemp makes it owner-only) and renamed over `destination` with
    ``os.replace``. On any error the temporary file is removed and an existing
    `destination` is left untouched.
    """
    folder = destination.parent if str(destination.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".bmdn-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        mode = destination.stat().st_mode & 0o777 if destination.exists() else 0o644
        os.chmod(temporary, mode)
        os.replace(temporary, destination)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_archive(destination: Path, metadata: dict[str, Any],
                  arrays: dict[str, np.ndarray]) -> None:
    """Write ``metadata.json`` + one ``.npy`` per array to a ZIP file, atomically
    (:func:`atomic_file`)."""
    with atomic_file(destination) as stream:
        with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(_METADATA, json.dumps(metadata, indent=1, default=_json_default))
            for name, array in arrays.items():
                buffer = io.BytesIO()
                # (np.ascontiguousarray would turn a 0-d array into shape (1,).)
                np.lib.format.write_array(buffer, np.asarray(array, order="C"),
                                          allow_pickle=False)
                archive.writestr(f"{name}.npy", buffer.getvalue())


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


def format_of(path: Path) -> str | None:
    """The ``format`` named in an archive's metadata.json, or None if unreadable."""
    try:
        with zipfile.ZipFile(path, "r") as archive:
            metadata = json.loads(archive.read(_METADATA).decode("utf-8"))
    except Exception:  # read_archive reports what is wrong with the file
        return None
    return metadata.get("format") if isinstance(metadata, dict) else None
