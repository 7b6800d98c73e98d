"""Benchmark: TorchSim 0.3.0 Frechet-FIRE steps with and without `memoized_expm_frechet`.

The batched relaxation always runs with it (crystalrl.relax.batched); this times the same
steps both ways on one batch of real Alexandria structures rattled by 0.1 Å, the MLIP
included, alternating the two ways `--repeats` times, and checks that the cell forces agree.

    .venv/bin/python bench/bench_frechet.py [--backend chgnet] [--batch-size 32] [--threads 2]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import time
import warnings

import numpy as np
import torch
from bench_relax import rattled_alexandria
from pymatgen.io.ase import AseAtomsAdaptor

from crystalrl.runtime import keep_freed_memory, set_threads
from crystalrl.mlip import MLIPConfig, load_mlip
from crystalrl.relax.frechet import memoized_expm_frechet


def run_steps(model, atoms_list, n_steps: int, memo: bool):
    """Seconds for init + `n_steps` Frechet-FIRE steps of the whole batch, and the last cell forces."""
    import torch_sim as ts

    init_fn, step_fn = ts.frechet_cell_fire(model, md_flavor="ase_fire")
    with memoized_expm_frechet() if memo else contextlib.nullcontext():
        t0 = time.perf_counter()
        state = init_fn(ts.initialize_state(atoms_list, model.device, model.dtype))
        for _ in range(n_steps):
            state = step_fn(state)
        return time.perf_counter() - t0, state.cell_forces.detach().clone()


def main():
    from crystalrl.mlip.torchsim import TorchSimModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="chgnet")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    set_threads(args.threads)
    keep_freed_memory()
    mlip = load_mlip(MLIPConfig.from_dict({"backend": args.backend}))
    atoms_list = [AseAtomsAdaptor.get_atoms(s) for s in rattled_alexandria(args.batch_size, 12, 0)]
    model = TorchSimModel(mlip)
    run_steps(model, atoms_list, 2, True)  # warm-up
    load0 = os.getloadavg()[0]
    times = {False: [], True: []}
    forces = {}
    for _ in range(args.repeats):
        for memo in (False, True):
            t, forces[memo] = run_steps(model, atoms_list, args.steps, memo)
            times[memo].append(t)
    diff = float((forces[True] - forces[False]).abs().max())
    t_off, t_on = np.median(times[False]), np.median(times[True])
    print(f"{mlip!r}, {torch.get_num_threads()} thread(s): {args.batch_size} Alexandria structures rattled by "
          f"0.1 Å, init + {args.steps} Frechet-FIRE steps, median of {args.repeats}; load average {load0:.1f} "
          f"at the start, {os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} cores")
    print(f"  TorchSim's expm_frechet, 9 calls per structure: {t_off / (args.steps + 1) * 1000:7.1f} ms per step")
    print(f"  memoized_expm_frechet, 1 per structure        : {t_on / (args.steps + 1) * 1000:7.1f} ms per step")
    print(f"speed-up memoized / TorchSim's = {t_off / t_on:.2f}x; cell forces differ by at most {diff:.1e} eV")


if __name__ == "__main__":
    main()
