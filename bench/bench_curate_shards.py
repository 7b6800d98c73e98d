"""Curation in shards at scale: rows/s and peak memory of one shard job, and what 1.3 M rows cost.

A synthetic data set of `--rows` structures (default 100,000) is built from the 1,980 real
Alexandria CIFs by element substitution within periodic-table groups (as
bench/bench_novelty.py builds its reference) and written as an Alex-20-style CSV. Each
job below runs in a fresh process (the `curate_shard` stage, one core), and its peak RSS
is the kernel's (VmHWM of the job's own address space):

- shard 0 of `--shards` over all rows (what each of the workflow's shard jobs does):
  it streams every row and parses its share;
- the same shard size over half the rows (half the shards): memory must not depend on
  the data set's size, only on the shard's;
- unsharded jobs over the first rows (as many as a shard, and twice that): a job that
  holds the whole data set grows with it (its RSS per 1,000 rows is printed).

Then the extrapolation to Alex-20's 1.3 M rows on a 32-core node (32 shard jobs at once,
one core each), from the measured rows/s, plus the streaming cost every shard job pays.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_curate_shards.py [--rows 100000] [--shards 16]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_novelty import build_reference  # noqa: E402

CHILD = r"""
import json, sys, time
from crystalrl.stages import run_stage
csv, shard, n_shards, out, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
data = {"source": "alex20_csv", "path": csv, "n_shards": n_shards, "limit": limit or None}
t0 = time.perf_counter()
run_stage("curate_shard", {}, {"kept": out + "/kept.parquet", "rejected": out + "/rejected.parquet"},
          {"data": data, "n_max": 21, "shard": shard})
wall = time.perf_counter() - t0
import pandas as pd
kept, rej = len(pd.read_parquet(out + "/kept.parquet")), len(pd.read_parquet(out + "/rejected.parquet"))
# VmHWM, not ru_maxrss: Linux carries the parent's peak into a forked child's ru_maxrss (across exec)
hwm_kib = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
print(json.dumps(dict(wall=wall, kept=kept, rejected=rej, peak_mib=hwm_kib / 1024)))
"""

STREAM = r"""
import itertools, sys, time
from crystalrl.data.sources import read_source
t0 = time.perf_counter()
n = sum(1 for _ in read_source("alex20_csv", sys.argv[1]))
print(n, time.perf_counter() - t0)
"""


def job(csv, shard, n_shards, limit=0) -> dict:
    with tempfile.TemporaryDirectory() as out:
        res = subprocess.run([sys.executable, "-c", CHILD, str(csv), str(shard), str(n_shards), out, str(limit)],
                             capture_output=True, text=True, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    r = json.loads(res.stdout.strip().splitlines()[-1])
    r["rows"] = r["kept"] + r["rejected"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=16)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ref = build_reference(a.rows, np.random.default_rng(0))
        csv = Path(tmp) / "train.csv"
        ref.rename(columns={"id": "material_id"})[["material_id", "cif"]].to_csv(csv, index=False)
        half = Path(tmp) / "half" / "train.csv"
        half.parent.mkdir()
        ref.iloc[: len(ref) // 2].rename(columns={"id": "material_id"})[["material_id", "cif"]].to_csv(half, index=False)
        print(f"synthetic set: {len(ref)} structures from 1,980 Alexandria CIFs by element substitution, "
              f"{csv.stat().st_size / 2**20:.0f} MiB CSV, built in {time.perf_counter() - t0:.0f} s")
        n, stream_s = subprocess.run([sys.executable, "-c", STREAM, str(csv)], capture_output=True, text=True,
                                     check=True).stdout.split()
        stream_rate = int(n) / float(stream_s)
        full = job(csv, 0, a.shards)
        halved = job(half, 0, a.shards // 2)
        whole = job(csv, 0, 1, limit=full["rows"])  # one unsharded job over as many rows as a shard
        whole2 = job(csv, 0, 1, limit=2 * full["rows"])
        load = os.getloadavg()[0]
    print(f"one core per job, each in a fresh process; load average {load:.1f} at the end")
    print(f"  streaming the CSV without parsing: {stream_rate:,.0f} rows/s")
    for label, r in ((f"shard 0 of {a.shards} over {len(ref)} rows", full),
                     (f"shard 0 of {a.shards // 2} over {len(ref) // 2} rows", halved),
                     (f"unsharded, first {full['rows']} rows", whole),
                     (f"unsharded, first {2 * full['rows']} rows", whole2)):
        print(f"  {label:38s}: {r['rows']:6d} rows parsed in {r['wall']:6.1f} s ({r['rows'] / r['wall']:5.1f} rows/s),"
              f" peak RSS {r['peak_mib']:5.0f} MiB")
    per_row = (whole2["peak_mib"] - whole["peak_mib"]) / max(whole2["rows"] - whole["rows"], 1) * 1000
    rate = full["rows"] / (full["wall"] - len(ref) / stream_rate)  # parsing only
    n_alex, cores = 1_300_000, 32
    per_job = n_alex / cores
    hours = (per_job / rate + n_alex / stream_rate) / 3600
    print(f"memory: a shard job's peak RSS is {full['peak_mib'] / halved['peak_mib']:.2f}x that of a job of the same "
          f"shard size over half the data; an unsharded job grows {per_row:.1f} MiB per 1,000 rows, "
          f"{per_row * n_alex / 1000 / 1024:.0f} GiB at 1.3 M")
    base = whole["peak_mib"] - per_row * whole["rows"] / 1000
    print(f"1.3 M rows on a 32-core node, {cores} shard jobs of {per_job:,.0f} rows at {rate:.1f} rows/s each plus "
          f"streaming all rows: {hours:.1f} h wall, each job about {base + per_row * per_job / 1000:.0f} MiB")


if __name__ == "__main__":
    main()
