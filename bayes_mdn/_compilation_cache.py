"""Opt-in persistent compilation cache: compiled fit programs kept on disk across processes.

Most of a fresh process's first ``fit`` is XLA compilation of a handful of programs (the
optimisation block, the starting point, the NumPyro initialisation). JAX can store compiled
executables on disk and load them in later processes instead of compiling again; this module
turns that on with settings that suit bayes_mdn. It is opt-in because it writes to the
user's disk and changes a process-wide JAX setting.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache as _jax_cache

__all__ = ["enable_compilation_cache"]

#: Environment variable overriding the default cache folder.
CACHE_DIR_ENV = "BAYES_MDN_CACHE_DIR"

#: Compilations shorter than this are not worth a disk entry: reading one back takes a few
#: tens of milliseconds, longer than compiling the tiny programs of eager array operations.
#: Every fit program takes longer.
DEFAULT_MIN_COMPILE_TIME_SECS = 0.05


def default_cache_dir() -> Path:
    """``$BAYES_MDN_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/bayes_mdn/jax``, else
    ``~/.cache/bayes_mdn/jax``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "bayes_mdn" / "jax"


def enable_compilation_cache(
    path: str | os.PathLike | None = None,
    *,
    min_compile_time_secs: float = DEFAULT_MIN_COMPILE_TIME_SECS,
) -> Path:
    """Keep compiled programs on disk so that later processes skip their compilation.

    Turns on JAX's persistent compilation cache for the rest of the process (it is a
    process-wide JAX setting, so it also caches programs compiled outside bayes_mdn). A fresh
    process that fits the same model to data of the same shape with the same options then
    loads the compiled fit programs instead of compiling them again (in the seed setting,
    compilation is most of a fresh process's first MAP fit; ``benchmarks/speed_seed.py``
    measures the saving). Tracing still runs; only XLA compilation is skipped. Call it once,
    early (before the first fit); calling it again with another `path` switches folders.

    Parameters
    ----------
    path : str or path-like, optional
        Cache folder, created if missing. Default: ``$BAYES_MDN_CACHE_DIR`` if set, else
        ``$XDG_CACHE_HOME/bayes_mdn/jax``, else ``~/.cache/bayes_mdn/jax``.
    min_compile_time_secs : float
        Only programs whose compilation took at least this long are written (JAX's
        ``jax_persistent_cache_min_compile_time_secs``). The default, 0.05 s, stores every
        fit program and skips the tiny programs of eager array operations, which compile
        faster than they load.

    Returns
    -------
    pathlib.Path
        The cache folder in use.

    Raises
    ------
    TypeError
        If `path` is not a string or path-like, or `min_compile_time_secs` not a number.
    ValueError
        If `min_compile_time_secs` is negative, or `path` exists and is not a folder.

    Notes
    -----
    The folder grows by about 1 MB per distinct compiled program and is never pruned; delete
    it at any time. Like JAX's own cache, treat it as trusted: do not point it at a folder
    that others can write to.

    Examples
    --------
    >>> import bayes_mdn as bm
    >>> folder = bm.enable_compilation_cache()  # doctest: +SKIP
    """
    if path is None:
        folder = default_cache_dir()
    elif isinstance(path, (str, os.PathLike)):
        folder = Path(path).expanduser()
    else:
        raise TypeError("`path` must be a string or path-like (a folder for the cache); "
                        f"got {type(path).__name__}.")
    if (isinstance(min_compile_time_secs, bool)
            or not isinstance(min_compile_time_secs, (int, float))):
        raise TypeError("`min_compile_time_secs` must be a number of seconds; got "
                        f"{min_compile_time_secs!r}.")
    if not min_compile_time_secs >= 0:
        raise ValueError("`min_compile_time_secs` must be >= 0; got "
                         f"{min_compile_time_secs}.")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"`path` must be a folder; {str(folder)!r} is a file.")
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    current = jax.config.jax_compilation_cache_dir
    if current is not None and Path(current).expanduser().resolve() != folder:
        _jax_cache.reset_cache()  # JAX opens its cache folder once; make it reopen
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_enable_compilation_cache", True)
    _jax_cache.set_cache_dir(str(folder))
    return folder
