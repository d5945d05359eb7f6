"""Catalogue-scale prediction: a Parquet file of 10^7 rows streamed to Parquet (issue 20).

Model: the seed's MDN (K = ``--num-components`` Normal components, default 20, hidden
layers (15, 15), tanh, fan-in Normal priors), fitted by MAP on 4000 rows of the seed's data
(a MAP fit keeps quantiles cheap: one draw). Catalogue: ``--rows`` inputs x from the seed's
generator (y ~ U(-10.5, 10.5), x = 7 sin(0.75 y) + 0.5 y + N(0, 1)) plus an int64 ``id``
column, in row groups of min(10^6, rows / 10) rows (one Dask partition each); and the same
for ``--small-rows``.

1. Streaming. A fresh subprocess per file loads the fit and runs
   ``bm.predict_table(post, source, dest, keep=["id"], outputs=["quantiles"],
   quantiles=(0.05, 0.5, 0.95))`` to Parquet. Its peak RSS (VmHWM, read in the child) on
   the large file is set against the same command's on the small file (target: at most
   300 MB more), and its rows/s against the in-memory predictive's.
2. In-memory baseline. A fresh subprocess reads the first ``--memory-rows`` x values into a
   NumPy array, compiles on 2^14 rows, then times
   ``post.predictive(X).quantiles([0.05, 0.5, 0.95])`` (no file reading or writing), after
   the streaming runs (target: streaming rows/s at least 0.9 of it). The machine is shared
   (8 engineers on 2 cores): the load average is recorded, and each run's process CPU time
   (user + system, ``getrusage``) too, so the ratio is also given per CPU second, which
   the other processes on the machine disturb far less than wall time.
3. Dask. ``bayes_mdn.dask.predict_parquet`` on the large file (or on a ``--dask-rows`` file,
   streamed in process too for the comparison) with a
   ``LocalCluster(n_workers=--workers, processes=True, threads_per_worker=1)``: its outputs
   compared with the in-process run's (exact equality and the largest difference) and its
   rows/s reported beside one process's (no target on a 2-core machine).

    python benchmarks/catalogue.py [--quick] [--rows 1e7] [--small-rows 1e5]
                                   [--memory-rows 1e6] [--batch-rows 131072] [--workers 2]
                                   [--num-components 20] [--dask-rows N] [--skip-dask]

``--quick``: 10^6 rows, the baseline on 2 x 10^5 rows, 200 MAP steps.
Writes ``results/catalogue.json`` and ``results/catalogue.md`` (``catalogue_quick.*``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LEVELS = (0.05, 0.5, 0.95)


def _rss_mb() -> float:
    """This process's peak resident set size (VmHWM). Not ``getrusage``'s ru_maxrss: Linux
    carries that across ``exec`` from the forking parent, so a child would report at least
    its parent's RSS at the fork."""
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# --------------------------------------------------------------------------- children
def child_stream(args: argparse.Namespace) -> dict:
    import bayes_mdn as bm

    posterior = bm.load(args.fit)
    before = _current_rss_mb()
    cpu = _cpu_seconds()
    started = time.perf_counter()
    report = bm.predict_table(posterior, args.source, args.dest, inputs=["x"], keep=["id"],
                              outputs=["quantiles"], quantiles=LEVELS,
                              batch_rows=args.batch_rows, progress=False)
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    return {"rows": report["num_rows"], "seconds": seconds,
            "rows_per_second": report["num_rows"] / seconds, "cpu_seconds": cpu,
            "rows_per_cpu_second": report["num_rows"] / cpu, "rss_before_MB": before,
            "peak_rss_MB": _rss_mb()}


def child_memory(args: argparse.Namespace) -> dict:
    import pyarrow.parquet as pq

    import bayes_mdn as bm

    posterior = bm.load(args.fit)
    file = pq.ParquetFile(args.source)
    pieces, count = [], 0
    for batch in file.iter_batches(batch_size=2**16, columns=["x"]):
        pieces.append(batch.column(0).to_numpy())
        count += batch.num_rows
        if count >= args.rows:
            break
    X = np.concatenate(pieces)[: args.rows, None]
    posterior.predictive(X[: 2**14]).quantiles(LEVELS)  # compile
    cpu = _cpu_seconds()
    started = time.perf_counter()
    quantiles = posterior.predictive(X).quantiles(LEVELS)
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    assert quantiles.shape == (3, X.shape[0], 1)
    return {"rows": int(X.shape[0]), "seconds": seconds,
            "rows_per_second": X.shape[0] / seconds, "cpu_seconds": cpu,
            "rows_per_cpu_second": X.shape[0] / cpu, "peak_rss_MB": _rss_mb()}


def child_dask(args: argparse.Namespace) -> dict:
    from dask.distributed import Client, LocalCluster

    import bayes_mdn as bm
    import bayes_mdn.dask as bmd

    posterior = bm.load(args.fit)
    with LocalCluster(n_workers=args.workers, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster):
        started = time.perf_counter()
        bmd.predict_parquet(posterior, args.source, args.dest, inputs=["x"], keep=["id"],
                            outputs=["quantiles"], quantiles=LEVELS)
        seconds = time.perf_counter() - started
    import pyarrow.parquet as pq

    rows = pq.ParquetDataset(args.dest).read(columns=["id"]).num_rows
    return {"rows": rows, "seconds": seconds, "rows_per_second": rows / seconds,
            "workers": args.workers}


def _run_child(kind: str, **options) -> dict:
    command = [sys.executable, __file__, "--child", kind]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), "BAYES_MDN_PROGRESS": "0"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- parent
def _fit(path: Path, num_steps: int, num_components: int) -> None:
    import jax

    import bayes_mdn as bm

    key = jax.random.key(0)
    X, y, _, _ = bm.datasets.inverse_sine(key, num_samples=8000, train_fraction=0.5)
    model = bm.MDN(num_components=num_components, hidden_sizes=(15, 15), activation="tanh",
                   prior={"default": bm.priors.FanInNormal(2.0),
                          "scale": bm.priors.FanInNormal(0.5)})
    posterior = model.fit(X, y, key=key, method="map", num_steps=num_steps)
    posterior.save(path)


def _catalogue(path: Path, rows: int, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    chunk = max(1, min(10**6, rows // 10))  # at least 10 row groups: Dask partitions
    schema = pa.schema([("id", pa.int64()), ("x", pa.float64())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, chunk):
            size = min(chunk, rows - start)
            y = rng.uniform(-10.5, 10.5, size)
            x = 7.0 * np.sin(0.75 * y) + 0.5 * y + rng.normal(size=size)
            writer.write_table(pa.table({"id": np.arange(start, start + size, dtype=np.int64),
                                         "x": x}, schema=schema))


def _compare(stream_path: Path, dask_path: Path) -> dict:
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    names = [f"q{level:g}_y" for level in LEVELS]
    stream = pq.ParquetFile(stream_path)
    dask_data = ds.dataset(dask_path, format="parquet")
    files = sorted(dask_data.files, key=lambda name: int(''.join(filter(str.isdigit,
                                                                          Path(name).name))))
    equal, total, largest = 0, 0, 0.0
    stream_batches = stream.iter_batches(batch_size=2**20, columns=["id", *names])
    pending = None
    for file in files:
        other = pq.read_table(file, columns=["id", *names])
        offset = 0
        while offset < other.num_rows:
            if pending is None or pending.num_rows == 0:
                pending = next(stream_batches)
            take = min(pending.num_rows, other.num_rows - offset)
            a, b = pending.slice(0, take), other.slice(offset, take)
            if not np.array_equal(a.column(0).to_numpy(), b.column(0).to_numpy()):
                raise RuntimeError("the Dask output's ids are not in the source's order")
            for name in names:
                left = a.column(name).to_numpy()
                right = b.column(name).to_numpy()
                equal += int(np.sum(left == right))
                total += left.size
                largest = max(largest, float(np.max(np.abs(left - right))))
            pending = pending.slice(take)
            offset += take
    return {"values_compared": total, "values_identical": equal,
            "identical_fraction": equal / total, "max_abs_difference": largest}


def _pairs(folder: Path, count: int, rows: int, batch_rows: int, write_results) -> None:
    """Interleaved in-memory and streaming runs on the same rows: on a machine whose load
    swings, neighbours in time see similar load, so their wall-clock ratio is fairer."""
    fit, source = folder / "fit.bmdn", folder / f"catalogue_{rows}.parquet"
    if not source.exists():
        _catalogue(source, rows, 3)
    table, ratios, cpu_ratios = [], [], []
    for index in range(count):
        memory = _run_child("memory", fit=fit, source=source, rows=rows)
        stream = _run_child("stream", fit=fit, source=source, batch_rows=batch_rows,
                            dest=folder / "pair_out.parquet")
        ratios.append(stream["rows_per_second"] / memory["rows_per_second"])
        cpu_ratios.append(stream["rows_per_cpu_second"] / memory["rows_per_cpu_second"])
        table.append({"pair": index + 1, "rows": rows,
                      "in-memory rows/s": memory["rows_per_second"],
                      "streaming rows/s": stream["rows_per_second"], "ratio": ratios[-1],
                      "ratio (CPU)": cpu_ratios[-1], "load": _load()[0]})
        print(table[-1], flush=True)
    table.append({"pair": "median", "ratio": float(np.median(ratios)),
                  "ratio (CPU)": float(np.median(cpu_ratios))})
    write_results("catalogue_pairs", {"rows": rows, "pairs": count}, table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=float, default=1e7)
    parser.add_argument("--small-rows", type=float, default=1e5)
    parser.add_argument("--memory-rows", type=float, default=1e6)
    parser.add_argument("--batch-rows", type=int, default=2**17)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--num-steps", type=int, default=1000)
    parser.add_argument("--num-components", type=int, default=20,
                        help="K of the MDN (quantile cost per row grows with K)")
    parser.add_argument("--dask-rows", type=float, default=None,
                        help="rows of the Dask comparison (default --rows)")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--pairs", type=int, default=0,
                        help="only: N interleaved (in-memory, streaming) pairs on the "
                             "--memory-rows file of --workdir, written to catalogue_pairs.*")
    parser.add_argument("--workdir", default=None, help="folder for the generated files")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fit", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--source", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dest", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.rows = int(args.rows)
        child = {"stream": child_stream, "memory": child_memory, "dask": child_dask}
        print(json.dumps(child[args.child](args)))
        return
    if args.quick:
        args.rows, args.memory_rows, args.num_steps = 1e6, 2e5, 200
    rows, small, memory_rows = int(args.rows), int(args.small_rows), int(args.memory_rows)
    from _common import write_results

    folder = Path(args.workdir or tempfile.mkdtemp(prefix="bmdn-catalogue-"))
    folder.mkdir(parents=True, exist_ok=True)
    if args.pairs:
        _pairs(folder, args.pairs, memory_rows, args.batch_rows, write_results)
        return
    load_start = _load()
    fit = folder / "fit.bmdn"
    _fit(fit, args.num_steps, args.num_components)
    large, little = folder / f"catalogue_{rows}.parquet", folder / f"catalogue_{small}.parquet"
    for path, count, seed in ((large, rows, 1), (little, small, 2)):
        if not path.exists():
            _catalogue(path, count, seed)
    print(f"files in {folder}; load {load_start}", flush=True)
    common = {"fit": fit, "batch_rows": args.batch_rows}
    name = "catalogue_quick" if args.quick else "catalogue"
    stream_small = _run_child("stream", source=little, dest=folder / "small_out.parquet",
                              **common)
    print("stream small", stream_small, flush=True)
    stream_large = _run_child("stream", source=large, dest=folder / "large_out.parquet",
                              **common)
    print("stream large", stream_large, flush=True)
    memory = _run_child("memory", fit=fit, source=large, rows=memory_rows)
    print("in-memory", memory, flush=True)
    growth = stream_large["peak_rss_MB"] - stream_small["peak_rss_MB"]
    ratio = stream_large["rows_per_second"] / memory["rows_per_second"]
    cpu_ratio = stream_large["rows_per_cpu_second"] / memory["rows_per_cpu_second"]

    def row(label: str, result: dict) -> dict:
        return {"run": label, "rows": result["rows"], "seconds": result["seconds"],
                "rows/s": result["rows_per_second"],
                "rows per CPU s": result.get("rows_per_cpu_second", ""),
                "peak RSS MB": result.get("peak_rss_MB", "")}

    table = [row("in-memory predictive", memory),
             row("predict_table, small file", stream_small),
             {**row("predict_table, large file", stream_large), "vs in-memory": ratio,
              "vs in-memory (CPU)": cpu_ratio, "RSS growth over small MB": growth}]
    payload = {
        "rows": rows, "small_rows": small, "memory_rows": memory_rows,
        "batch_rows": args.batch_rows, "levels": LEVELS, "map_steps": args.num_steps,
        "num_components": args.num_components,
        "stream_large": stream_large, "stream_small": stream_small, "memory": memory,
        "throughput_ratio": ratio, "throughput_ratio_cpu": cpu_ratio, "rss_growth_MB": growth,
        "targets": {"rss_growth_MB_at_most": 300, "throughput_ratio_at_least": 0.9},
        "met": {"rss": growth <= 300, "throughput": ratio >= 0.9,
                "throughput_cpu": cpu_ratio >= 0.9},
        "load_average_start": load_start, "load_average_end": _load(),
    }
    write_results(name, payload, table)  # written now, and again with the Dask rows
    if args.skip_dask:
        return
    dask_rows = int(args.dask_rows or rows)
    source, reference = large, folder / "large_out.parquet"
    reference_result = stream_large
    if dask_rows != rows:
        source = folder / f"catalogue_{dask_rows}.parquet"
        if not source.exists():
            _catalogue(source, dask_rows, 3)
        reference = folder / f"stream_{dask_rows}.parquet"
        reference_result = _run_child("stream", source=source, dest=reference, **common)
        print("stream (Dask's file)", reference_result, flush=True)
        table.append(row("predict_table, Dask's file", reference_result))
    dask_result = _run_child("dask", fit=fit, source=source, dest=folder / "dask_out",
                             workers=args.workers)
    print("dask", dask_result, flush=True)
    comparison = _compare(reference, folder / "dask_out")
    print("comparison", comparison, flush=True)
    payload["dask"] = {**dask_result, **comparison, "one_process": reference_result}
    table.append({**row(f"Dask, {args.workers} local worker processes", dask_result),
                  "vs one process": dask_result["rows_per_second"]
                  / reference_result["rows_per_second"],
                  "identical values": f"{comparison['values_identical']}/"
                                      f"{comparison['values_compared']}",
                  "max abs diff": comparison["max_abs_difference"]})
    payload["load_average_end"] = _load()
    write_results(name, payload, table)


if __name__ == "__main__":
    main()
