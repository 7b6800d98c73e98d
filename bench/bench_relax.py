"""Benchmark: batched relaxation (TorchSim FIRE + Frechet cell filter, many structures per model
call) vs the per-structure reference (ASE FIRE + FrechetCellFilter), same MLIP, same run.

Structures: `--n` real Alexandria CIFs (seeded pick, at most `--max-sites` sites) from
../shared/data/alexandria_sample, each rattled by 0.1 Å (ASE `rattle`, Gaussian per
Cartesian component). Both methods go through `crystalrl.relax.relax_structures` with the
same fmax and max_steps. Prints structures per second of each, their ratio, and the median
and worst difference of the final energies (structures both relaxed without failure).

    CPU:  .venv/bin/python bench/bench_relax.py [--backend chgnet] [--n 100] [--threads 2]
    GPU:  .venv/bin/python bench/bench_relax.py --device cuda --n 200 --batch-size 200
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
from pymatgen.io.ase import AseAtomsAdaptor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_mlip import load_alexandria  # noqa: E402

from crystalrl.runtime import keep_freed_memory, set_threads  # noqa: E402
from crystalrl.mlip import MLIPConfig, load_mlip  # noqa: E402
from crystalrl.relax import RelaxConfig, relax_structures  # noqa: E402

SHARED = Path(os.environ.get("CRYSTALRL_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def rattled_alexandria(n: int, max_sites: int, seed: int, stdev: float = 0.1):
    out = []
    for k, s in enumerate(load_alexandria(SHARED / "data", n, max_sites=max_sites, seed=seed)):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.rattle(stdev=stdev, seed=seed + k)
        out.append(AseAtomsAdaptor.get_structure(atoms))
    return out


def model_call_ms(mlip, atoms_list, batch_size: int) -> tuple[float, float, float]:
    """ms per structure of an energy+forces+stress call: by the package's own ASE calculator one
    structure at a time (what the per-structure relaxation calls each step), by our `forward` one
    structure at a time, and by our `forward` in batches of `batch_size`. The last two isolate
    what batching gains; the first and the last bound what the batched relaxation can gain."""
    calc = mlip.calculator()
    graphs = [mlip.graph(a) for a in atoms_list]
    mlip.forward(graphs[:batch_size])  # warm-up
    t0 = time.perf_counter()
    for atoms in atoms_list:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_stress()  # the calculator computes energy, forces and stress in one call
    t1 = time.perf_counter()
    for g in graphs:
        mlip.forward([g])
    t2 = time.perf_counter()
    for k in range(0, len(graphs), batch_size):
        mlip.forward(graphs[k:k + batch_size])
    t3 = time.perf_counter()
    return tuple((b - a) / len(graphs) * 1000 for a, b in ((t0, t1), (t1, t2), (t2, t3)))


def print_model_calls(mlip, structures, batch_size: int) -> None:
    if not mlip.batched:
        return
    calc, one, many = model_call_ms(mlip, [AseAtomsAdaptor.get_atoms(s) for s in structures], batch_size)
    print(f"{mlip!r}, {torch.get_num_threads()} thread(s), model calls alone (energy, forces, stress of "
          f"{len(structures)} unrelaxed structures), ms per structure:\n"
          f"  package's ASE calculator one at a time {calc:6.1f}\n"
          f"  our forward one at a time              {one:6.1f}   calculator / ours {calc / one:.2f}x\n"
          f"  our forward in batches of {batch_size:<4d}         {many:6.1f}   one at a time / batched "
          f"{one / many:.2f}x, calculator / batched {calc / many:.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="chgnet")
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--max-sites", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32, help="structures relaxed together (batched)")
    ap.add_argument("--fmax", type=float, default=0.1)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-calls-only", action="store_true",
                    help="only time the model calls, one structure vs a batch per call (seconds, not minutes)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    set_threads(args.threads)  # as the workflow's stages do: torch gets them, numpy's BLAS one
    keep_freed_memory()  # as the stages do

    structures = rattled_alexandria(args.n, args.max_sites, args.seed)
    nat = np.array([len(s) for s in structures])
    mlip = load_mlip(MLIPConfig.from_dict({"backend": args.backend, "model": args.model, "device": args.device}))
    if args.model_calls_only:
        print_model_calls(mlip, structures, args.batch_size)
        return
    cfg = {"fmax": args.fmax, "max_steps": args.max_steps, "batch_size": args.batch_size}
    relax_structures(mlip, structures[:2], RelaxConfig.from_dict({**cfg, "method": "batched"}))  # warm-up
    relax_structures(mlip, structures[:1], RelaxConfig.from_dict({**cfg, "method": "ase"}))

    load0 = os.getloadavg()[0]
    runs = {}
    for method in ("ase", "batched"):
        t0 = time.perf_counter()
        df = relax_structures(mlip, structures, RelaxConfig.from_dict({**cfg, "method": method}))
        runs[method] = (time.perf_counter() - t0, df)
    (t_ase, ase), (t_bat, bat) = runs["ase"], runs["batched"]
    both = (ase["status"] == "ok") & (bat["status"] == "ok")
    d_mev = (bat["energy_final"] - ase["energy_final"]).abs()[both].to_numpy() * 1000

    print(f"{mlip!r} on {mlip.device}, {args.threads} thread(s): {len(structures)} Alexandria structures "
          f"rattled by 0.1 Å, {nat.sum()} atoms (mean {nat.mean():.1f}); fmax {args.fmax} eV/Å, "
          f"max_steps {args.max_steps}, batch {args.batch_size}; load average {load0:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} cores")
    for name, (t, df) in (("per-structure ASE FIRE", runs["ase"]), ("batched TorchSim FIRE", runs["batched"])):
        print(f"{name:24s}: {t:8.1f} s  {len(structures) / t:7.2f} structures/s  "
              f"{df['steps'].sum():6d} steps, {df['converged'].sum()} converged, "
              f"{(df['status'] != 'ok').sum()} failed")
    print(f"speed-up batched / per-structure = {t_ase / t_bat:.2f}x")
    print_model_calls(mlip, structures, args.batch_size)
    print(f"|E_final batched - E_final ASE| over {both.sum()} structures: median {np.median(d_mev):.3f} "
          f"meV/atom, worst {d_mev.max():.3f} meV/atom; steps differ by at most "
          f"{(bat['steps'] - ase['steps']).abs().max()}")


if __name__ == "__main__":
    main()
