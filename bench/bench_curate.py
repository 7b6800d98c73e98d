"""Benchmark: curating the 1,980 Alexandria CIFs, P processes vs 1 (same run).

Usage: python bench/bench_curate.py [--n N] [--processes P]
The single-process run is the baseline: machine contention affects both sides, so
the ratio is the comparable figure. Most of the time is pymatgen's CIF parser and
two spglib calls per structure (space group at symprec 0.1, orbits at 0.01).
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from crystalrl.data.curate import curate  # noqa: E402
from crystalrl.data.sources import read_source  # noqa: E402

SHARED = Path(os.environ.get("CRYSTALRL_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def timed(rows, processes):
    t0 = time.perf_counter()
    splits, rejected = curate(rows, processes=processes)
    return time.perf_counter() - t0, sum(len(v) for v in splits.values()), len(rejected)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="first N structures (default all)")
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    logging.getLogger("crystalrl").setLevel(logging.WARNING)
    rows = list(itertools.islice(
        read_source("cif_dir", SHARED / "data" / "alexandria_sample" / "cifs.tar.gz"), args.n))
    print(f"{len(rows)} structures; cpus available: {len(os.sched_getaffinity(0))}; "
          f"load average {os.getloadavg()[0]:.2f}")
    timed(rows[:4], 1)  # lazy imports (pymatgen.io.cif, spglib)
    t1, k1, r1 = timed(rows, 1)
    print(f"baseline 1 process : {t1:7.1f} s  {len(rows) / t1:6.1f} structures/s ({k1} kept, {r1} rejected)")
    tp, kp, rp = timed(rows, args.processes)
    print(f"{args.processes} processes        : {tp:7.1f} s  {len(rows) / tp:6.1f} structures/s "
          f"({kp} kept, {rp} rejected)")
    print(f"speed-up vs 1 process: {t1 / tp:.2f}x")


if __name__ == "__main__":
    main()
