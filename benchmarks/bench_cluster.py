"""Benchmark: ``facepriv run CONFIG`` serial vs. ``--scheduler local:N`` (Dask), same numbers?

Runs the CLI twice in fresh processes, each into a new run folder under ``--work``: first serially,
then on a LocalCluster of N worker processes (the second folder starts from the first one's
``config.resolved.yaml`` and key store, so that keys the config leaves open are the same and
``metrics.json`` can be compared byte for byte). Reports the wall time of each run split at the
driver's log lines (cluster up; "cells follow", after embedding; the last cell's progress line;
then the cluster's shutdown), the sum of the per-cell seconds of ``timings.json``, the load average before and after, and whether the two
``metrics.json`` are identical.

    nice .venv/bin/python benchmarks/bench_cluster.py configs/tbiom2022.yaml --workers 2

Both runs embed the photos in the driver (aligned crops come from facepriv's global cache after
the first run on a machine), so the embedding part is the same in both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_cli(config: Path, out: Path, scheduler: str | None) -> dict[str, float]:
    """``facepriv run CONFIG --out OUT [--scheduler S] --no-report``; times from its log lines."""
    cmd = [sys.executable, "-m", "facepriv.cli.main", "run", str(config), "--out", str(out), "--no-report"]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    env = {**os.environ, "FACEPRIV_NO_PROGRESS": "1"}
    t0 = time.perf_counter()
    cells_from = connected = last_done = None
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    assert proc.stderr is not None
    tail: list[str] = []
    for line in proc.stderr:  # the child's stderr is line-buffered: each line is timed as it comes
        now = time.perf_counter() - t0
        if "dask: " in line and "to connect" in line:
            connected = now
        if "cells follow" in line and cells_from is None:
            cells_from = now
        if ": done in " in line or ": failed in " in line:
            last_done = now
        tail = (tail + [line])[-20:]
    rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {rc}:\n{''.join(tail)}")
    timings = json.loads((out / "timings.json").read_text())
    nan = float("nan")
    cells_end = last_done if last_done is not None else wall  # serial: the cells end with the run
    return {"wall": wall, "connect": connected if connected is not None else nan,
            "before_cells": cells_from if cells_from is not None else nan,
            "cells_wall": cells_end - cells_from if cells_from is not None else nan,
            "after_cells": wall - cells_end, "cell_seconds": sum(timings.values()), "cells": len(timings)}


def describe(name: str, r: dict[str, float]) -> str:
    """One result line."""
    return (f"{name}: {r['wall']:.1f} s wall = {r['before_cells']:.1f} s up to the cells (cluster up at "
            f"{r['connect']:.1f} s; listing, embedding) + {r['cells_wall']:.1f} s cells + {r['after_cells']:.1f} s "
            f"after (cluster shutdown); {r['cells']} cells, {r['cell_seconds']:.1f} s summed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path, help="experiment YAML (e.g. configs/tbiom2022.yaml)")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes (local:N, default 2)")
    ap.add_argument("--work", type=Path, help="folder for the two run folders (default: a temporary one, removed)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    serial, dask = work / "serial", work / "dask"
    for d in (serial, dask):
        if d.exists():
            raise SystemExit(f"{d} exists; choose another --work")
    load0 = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; "
          f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    s = run_cli(args.config, serial, None)
    print(describe("serial", s), flush=True)
    (dask / "private").mkdir(parents=True)
    shutil.copy2(serial / "config.resolved.yaml", dask / "config.resolved.yaml")
    if (serial / "private" / "keys.json").is_file():
        shutil.copy2(serial / "private" / "keys.json", dask / "private" / "keys.json")
    d = run_cli(args.config, dask, f"local:{args.workers}")
    print(describe(f"local:{args.workers}", d), flush=True)
    same = (serial / "metrics.json").read_bytes() == (dask / "metrics.json").read_bytes()
    load1 = os.getloadavg()
    print(f"metrics.json identical: {same}; load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print(f"speed-up: total {s['wall'] / d['wall']:.2f}x, cells phase {s['cells_wall'] / d['cells_wall']:.2f}x")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
