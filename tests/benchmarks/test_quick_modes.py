"""Every benchmark script's ``--quick`` mode still runs (slow: minutes each on two cores), so
a refactor cannot silently break a benchmark.

The scripts run in a subprocess from a copy of ``benchmarks/`` in a temporary folder, so their
``results/*_quick.*`` files land there and the checkout is left untouched; the package is the
checkout's (``PYTHONPATH``). The copy sits in a ``checkout/`` folder beside a link to the real
``../shared``, so scripts that find their data as ``../shared/data`` find it there too. Scripts
that read the UCI data get the checkout's data folder and are skipped without it. A script
with a ``--quick`` flag is found by reading its source, so a new benchmark is covered without
editing this file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
#: Scripts with a quick mode: those whose source defines a "--quick" option.
QUICK_SCRIPTS = sorted(path.name for path in BENCHMARKS.glob("*.py")
                       if not path.name.startswith("_") and '"--quick"' in path.read_text())
#: Scripts that read the UCI data folder, passed as ``--data``.
UCI_DATA = ROOT.parent / "shared" / "data" / "uci"
NEEDS_UCI = ("uci.py", "robustness.py")
#: Each quick mode must finish within this many seconds.
TIMEOUT = 1800


def test_quick_scripts_are_found():
    assert "inference_seed.py" in QUICK_SCRIPTS and "scale.py" in QUICK_SCRIPTS


@pytest.mark.slow
@pytest.mark.parametrize("script", QUICK_SCRIPTS)
def test_benchmark_quick_mode_runs(script, tmp_path):
    arguments = ["--quick"]
    if script in NEEDS_UCI:
        if not UCI_DATA.is_dir():
            pytest.skip(f"{script} needs the UCI data at {UCI_DATA}")
        arguments += ["--data", str(UCI_DATA)]
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (tmp_path / "shared").symlink_to(shared, target_is_directory=True)
    copy = tmp_path / "checkout" / "benchmarks"
    shutil.copytree(BENCHMARKS, copy, ignore=shutil.ignore_patterns("results", "__pycache__"))
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "BAYES_MDN_PROGRESS": "0",
                   "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(copy / script), *arguments], cwd=copy,
                            env=environment, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{script} --quick failed:\n{result.stderr[-4000:]}"
    written = list((copy / "results").glob("*_quick.json"))
    assert written, f"{script} --quick wrote no results/*_quick.json"
