"""Helpers shared by the benchmark scripts: timing and writing JSON + Markdown results."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

RESULTS = Path(__file__).resolve().parent / "results"


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    """Run `function`, block on its JAX outputs, return (result, seconds)."""
    started = time.perf_counter()
    result = jax.block_until_ready(function())
    return result, time.perf_counter() - started


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(),
            "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}


def write_results(name: str, payload: dict[str, Any], table: list[dict[str, Any]],
                  quiet: bool = False) -> None:
    """Write results/<name>.json and results/<name>.md (a Markdown table of `table`, also
    printed unless `quiet`). Rows may differ in their keys: the columns are their union."""
    RESULTS.mkdir(exist_ok=True)
    payload = {**payload, "machine": machine(), "rows": table}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=float))
    columns = list(dict.fromkeys(key for row in table for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        cells = [_cell(row.get(column, "")) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    if not quiet:
        print("\n".join(lines))


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
