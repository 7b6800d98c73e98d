"""Benchmark: batched MLIP energies vs one ASE calculator call per structure (same model, same run).

The public CrystalFormer-RL reward computes energies with one ASE calculator call
per structure; `MLIP.energies` batches graphs and, for CHGNet, skips the force and
stress backward pass that the calculator always does. Structures: 200 real
Alexandria CIFs (seeded pick, all sizes) from ../shared/data/alexandria_sample.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_mlip.py [--n 200] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_mlip import ase_energies, load_alexandria  # noqa: E402

from crystalrl.mlip import get_mlip  # noqa: E402

SHARED = Path(os.environ.get("CRYSTALRL_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-sites", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    structures = load_alexandria(SHARED / "data", args.n, max_sites=args.max_sites, seed=0)
    nat = np.array([len(s) for s in structures])
    mlip = get_mlip("chgnet")
    calc = mlip.calculator()
    mlip.energies(structures[:2])
    ase_energies(calc, structures[:2])

    t0 = time.perf_counter()
    e_batch = mlip.energies(structures, batch_size=args.batch_size)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = mlip.predict(structures, batch_size=args.batch_size)
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    e_ase = ase_energies(calc, structures)
    t_ase = time.perf_counter() - t0

    d = np.abs(e_batch - e_ase) / nat
    print(f"{mlip!r}: {len(structures)} Alexandria structures, {nat.sum()} atoms "
          f"(mean {nat.mean():.1f}), batch size {args.batch_size}, {args.threads} thread(s)")
    print(f"ASE calculator, one call per structure: {t_ase:7.2f} s ({len(structures) / t_ase:6.1f} structures/s)")
    print(f"batched energies (MLIP.energies):      {t_batch:7.2f} s ({len(structures) / t_batch:6.1f} structures/s)")
    print(f"batched energy+forces+stress (predict): {t_full:7.2f} s ({len(structures) / t_full:6.1f} structures/s)")
    print(f"max |E_batched - E_ase| = {d.max():.2e} eV/atom; "
          f"max |E_predict - E_ase| = {(np.abs(full['energy'] - e_ase) / nat).max():.2e} eV/atom")
    print(f"speed-up energies vs ASE loop = {t_ase / t_batch:.2f}x (target >= 2)")
    print(f"speed-up energy+forces+stress vs ASE loop = {t_ase / t_full:.2f}x")


if __name__ == "__main__":
    main()
