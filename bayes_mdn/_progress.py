"""Progress bars for long calls (fits, predictive queries over many inputs, streaming).

One policy for the whole package: a call's ``progress`` argument is ``True``, ``False`` or
``None`` (the default, meaning "decide for me"). ``None`` shows a bar only when standard
error is a terminal and the environment variable ``BAYES_MDN_PROGRESS`` is not ``0``, so
scripts, tests and CI stay quiet without passing anything; ``BAYES_MDN_PROGRESS=1`` forces
bars on everywhere. Bars are tqdm's, written to standard error, and are updated from the
host between compiled blocks, never from inside a compiled step.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["ENV_VAR", "check_progress", "progress_bar", "show_progress"]

ENV_VAR = "BAYES_MDN_PROGRESS"


def check_progress(progress: Any, name: str = "progress") -> bool | None:
    """Validate a ``progress`` argument (True, False or None) and return it unchanged."""
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`{name}` must be True, False or None (automatic: on in a terminal); "
                        f"got {progress!r}.")
    return progress


def show_progress(progress: bool | None) -> bool:
    """Resolve ``progress`` to whether a bar is shown.

    Parameters
    ----------
    progress : bool or None
        An explicit choice wins; ``None`` reads ``BAYES_MDN_PROGRESS`` (``"0"``/``"1"``) and
        otherwise shows a bar only when standard error is a terminal.

    Returns
    -------
    bool
    """
    if progress is not None:
        return bool(progress)
    setting = os.environ.get(ENV_VAR, "").strip().lower()
    if setting in {"0", "false", "no", "off"}:
        return False
    if setting in {"1", "true", "yes", "on"}:
        return True
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(total: int | None, *, desc: str, progress: bool | None = None,
                 unit: str = "it", **kwargs: Any) -> tqdm:
    """A tqdm bar on standard error, disabled unless :func:`show_progress` says otherwise.

    Parameters
    ----------
    total : int or None
        Number of units of work (steps, rows, draws); None for an open-ended bar.
    desc : str
        Short label, e.g. ``"map"`` or ``"predict"``.
    progress : bool or None
        See :func:`show_progress`.
    unit : str
        Unit name shown by tqdm.
    **kwargs
        Passed on to ``tqdm``.

    Returns
    -------
    tqdm
        Use as a context manager and call ``update(n)`` / ``set_postfix(...)``.
    """
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                disable=not show_progress(progress), dynamic_ncols=True, leave=True, **kwargs)
