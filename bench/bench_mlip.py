"""Benchmark: batched MLIP energies vs one ASE calculator call per structure (same model, same run).

The public CrystalFormer-RL reward computes energies with one ASE calculator call
per structure; `MLIP.energies` batches graphs and, for CHGNet, skips the force and
stress backward pass that the calculator always does. Structures: 200 real
Alexandria CIFs (seeded pick, all sizes) from ../shared/data/alexandria_sample.

`--accuracy chgnet,sevennet` instead compares backends on the 35 MP-20 rows of
../shared/data/mp20 that lie in the MP formation-energy table: each row's e_hull from
the MLIP energy (MP2020-corrected where the backend needs it) against its e_hull from
the MP2020-corrected DFT formation energy, on the same MP hull; and the time per row.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_mlip.py [--backend chgnet] [--n 200] [--batch-size 32]
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_mlip.py --accuracy chgnet,sevennet
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

from crystalrl.mlip import MLIPConfig, load_mlip  # noqa: E402

SHARED = Path(os.environ.get("CRYSTALRL_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-sites", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="chgnet")
    ap.add_argument("--accuracy", default=None, help="comma-separated backends to compare on MP-20")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    if args.accuracy:
        return accuracy(args.accuracy.split(","))

    structures = load_alexandria(SHARED / "data", args.n, max_sites=args.max_sites, seed=0)
    nat = np.array([len(s) for s in structures])
    mlip = load_mlip(MLIPConfig.from_dict({"backend": args.backend, "device": "cpu"}))
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


def accuracy(backends: list[str]) -> None:
    """e_hull from each backend vs from MP2020-corrected DFT, 35 MP-20 rows on the MP-20 hull."""
    import pandas as pd
    from pymatgen.analysis.phase_diagram import PDEntry
    from pymatgen.core import Composition, Structure

    from crystalrl.hull import HullConfig, e_above_hull, load_hull

    data = SHARED / "data"
    hull = load_hull(HullConfig.from_dict({
        "reference": str(data / "mp20" / "mp20_formation_energies.csv.gz"), "format": "formation_table",
        "elemental_entries": str(data / "mp_entries" / "mp_elemental_reference_entries.json.gz")}))
    table = pd.read_csv(data / "mp20" / "mp20_formation_energies.csv.gz", usecols=["material_id"])
    rows = pd.read_csv(data / "mp20" / "mp20_rows.csv")
    rows = rows[rows["material_id"].isin(table["material_id"])].reset_index(drop=True)
    structures = [Structure.from_str(c, fmt="cif") for c in rows["cif"]]
    dft, _ = hull.e_above_hull([PDEntry(Composition(f), ef * Composition(f).num_atoms)
                                for f, ef in zip(rows["pretty_formula"], rows["formation_energy_per_atom"])])
    print(f"{len(rows)} MP-20 rows on the MP-20 formation-energy hull; e_hull(MLIP) vs e_hull(DFT, MP2020)")
    for b in backends:
        t0 = time.perf_counter()
        mlip = load_mlip(MLIPConfig.from_dict({"backend": b, "device": "cpu"}))
        t_load = time.perf_counter() - t0
        mlip.energies(structures[:2])
        t0 = time.perf_counter()
        e = mlip.energies(structures, batch_size=16)
        t_e = time.perf_counter() - t0
        d = np.abs(e_above_hull(hull, structures, e, mlip=mlip)[0] - dft)
        print(f"{mlip!r:34s} MAE {np.nanmean(d):.3f} eV/atom, median {np.nanmedian(d):.3f}, "
              f"within 0.1 eV/atom {np.sum(d < 0.1)}/{len(d)}; load {t_load:.1f} s, "
              f"{len(structures) / t_e:.1f} structures/s (batched energies)")


if __name__ == "__main__":
    main()
