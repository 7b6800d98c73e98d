"""Benchmark: how long Snakemake takes to parse the workflow, this tree vs an older commit.

Every dry run, every `snakemake` call and, on a cluster, every Slurm job (the jobstep
starts Snakemake, which parses the workflow before running one rule) pays this once.
The baseline is a git worktree of `--baseline` (default: the commit before pymatgen was
made a lazy import of `crystalrl.hull`) with its own `src/` first on PYTHONPATH, timed in
the same run, alternating with this tree so that load changes hit both alike.

    .venv/bin/python bench/bench_parse.py [--baseline 4c39ec8~1] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DRY_RUN = [sys.executable, "-m", "snakemake", "-n", "all", "--configfile", "config/demo.yaml", "--quiet", "rules"]


def parse_seconds(tree: Path) -> float:
    """Wall time of one dry run of the demo in `tree`, its own package first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "src"), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run(DRY_RUN, cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"dry run in {tree} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="4c39ec8~1", help="git revision to compare with")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_parse_"))
    base = tmp / "baseline"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(base), args.baseline], check=True)
    try:
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
        parse_seconds(REPO), parse_seconds(base)          # warm the file system cache
        now, old = [], []
        for _ in range(args.repeats):
            now.append(parse_seconds(REPO))
            old.append(parse_seconds(base))
        m_now, m_old = statistics.median(now), statistics.median(old)
        print(f"dry run of the demo DAG, median of {args.repeats}:")
        print(f"  baseline {args.baseline:>12}: {m_old:6.2f} s  (runs {min(old):.2f}-{max(old):.2f} s)")
        print(f"  this tree   {'':>9}: {m_now:6.2f} s  (runs {min(now):.2f}-{max(now):.2f} s)")
        print(f"speed-up this tree / baseline = {m_old / m_now:.2f}x")
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
