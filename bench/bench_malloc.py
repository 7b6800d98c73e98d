"""Benchmark: MLIP model calls with glibc's default allocator settings vs `keep_freed_memory`.

glibc reads its allocator settings once per process, so each measurement is a fresh child
process: the same model calls (energy, forces, stress of `--n` rattled Alexandria structures,
one at a time and in batches of `--batch-size`), alternated default / kept `--repeats` times.
Prints the median ms per structure of each, their ratio, and the child's page faults.

    .venv/bin/python bench/bench_malloc.py [--backend sevennet] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def child(args) -> None:
    """One measurement, printed as JSON: ms per structure one at a time and batched, page faults."""
    import resource

    sys.path.insert(0, str(HERE))
    from bench_relax import model_call_ms, rattled_alexandria
    from pymatgen.io.ase import AseAtomsAdaptor

    from crystalrl.runtime import keep_freed_memory, set_threads
    from crystalrl.mlip import MLIPConfig, load_mlip

    warnings.filterwarnings("ignore")
    set_threads(args.threads)
    if args.keep:
        assert keep_freed_memory(), "mallopt refused the settings"
    atoms = [AseAtomsAdaptor.get_atoms(s) for s in rattled_alexandria(args.n, 12, 0)]
    mlip = load_mlip(MLIPConfig.from_dict({"backend": args.backend}))
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    one, many = model_call_ms(mlip, atoms, args.batch_size)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    print(json.dumps({"one": one, "many": many, "faults": faults}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="sevennet")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    load0 = os.getloadavg()[0]
    runs = {"default": [], "kept": []}
    base = [sys.executable, __file__, "--child", "--backend", args.backend, "--n", str(args.n),
            "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    for _ in range(args.repeats):
        for name, extra in (("default", []), ("kept", ["--keep"])):
            out = subprocess.run(base + extra, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {name: {k: float(np.median([r[k] for r in rs])) for k in ("one", "many", "faults")}
           for name, rs in runs.items()}
    print(f"{args.backend}, {args.threads} thread(s), {args.n} Alexandria structures rattled by 0.1 Å; "
          f"model calls (energy, forces, stress), median of {args.repeats} processes each; "
          f"load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} cores")
    for name in ("default", "kept"):
        m = med[name]
        print(f"  {name:8s} glibc: {m['one']:6.1f} ms/structure one at a time, {m['many']:6.1f} ms/structure "
              f"in batches of {args.batch_size}, {m['faults']:9.0f} page faults")
    d, k = med["default"], med["kept"]
    print(f"speed-up kept / default: {d['one'] / k['one']:.2f}x one at a time, {d['many'] / k['many']:.2f}x batched")


if __name__ == "__main__":
    main()
