"""Batched relaxation: TorchSim's FIRE + Frechet cell filter, many structures per model call.

TorchSim's `frechet_cell_fire` in its "ase_fire" flavour takes ASE's FIRE step and
ASE's FrechetCellFilter cell forces per structure, but moves a whole batch with one
model call per step (on the GPU when the MLIP is there), so it follows the ASE
reference step for step (bench/bench_relax.py measures how closely).

The loop around the step is ours, not `torch_sim.optimize`, for three reasons:
- Convergence is ASE's criterion, tested here each step: every atom force (in the
  filter's frame) and every cell-force row below fmax. TorchSim's default changed
  between releases (`include_cell_forces` True up to 0.5.0, False from 0.5.1);
  without the cell forces a relaxation stops early, with a lattice ASE would still move.
- `max_steps` counts per structure (0.3.0's `optimize` counts the whole run).
- After every step the `Guards` check each structure, so one that explodes leaves
  the batch with its reason while the others go on.
Structures leave the batch when converged, exploded or out of steps, and waiting
ones take their place, so the batch stays full. The cell forces' matrix-exponential
derivatives take one call per structure, not nine (`frechet.memoized_expm_frechet`).

TorchSim 0.3.0 marks a structure's first FIRE step with NaN velocities, and while any
structure of the batch has them it skips the FIRE update of every structure in it: each
refill would disturb the others' relaxations (fixed in TorchSim 0.6, PR #490, which
needs Python 3.12). So new structures start with zero velocities and twice the start
time step instead: FIRE's "no power" branch then halves the step and keeps the
velocities at zero, which is exactly ASE's first step, for them alone.
"""
from __future__ import annotations

import logging
import time
from collections import deque

import numpy as np
import torch
from ase import Atoms
from pymatgen.io.ase import AseAtomsAdaptor

from crystalrl.mlip.base import BatchedMLIP
from crystalrl.logs import Progress

from .frechet import memoized_expm_frechet
from .guards import Guards

log = logging.getLogger(__name__)


def max_filter_force(state) -> torch.Tensor:
    """Per structure, the largest force row ASE's FIRE compares with fmax: atom forces
    times the deformation gradient, and the Frechet cell forces (n_systems,)."""
    f_n3 = torch.bmm(state.forces.unsqueeze(1), state.deform_grad()[state.system_idx]).squeeze(1)
    atom_b = torch.zeros(state.n_systems, dtype=f_n3.dtype, device=f_n3.device).scatter_reduce(
        0, state.system_idx, f_n3.norm(dim=1), "amax", include_self=False)
    return torch.maximum(atom_b, state.cell_forces.norm(dim=2).amax(dim=1))


F_DEC = 0.5  # FIRE's time-step decrease factor (ASE's and TorchSim's default)


@memoized_expm_frechet()  # TorchSim 0.3.0's cell forces: one matrix exponential per structure, not 9
def relax_batched(mlip: BatchedMLIP, atoms_list: list[Atoms], *, fmax: float, max_steps: int,
                  guards: Guards, batch_size: int) -> tuple[list[dict | None], list[int]]:
    """Relax `atoms_list` in batches of `batch_size`; -> (rows, retry).

    rows[i]: status, steps, converged, energy_final (eV/atom), cif_relaxed, seconds (its
    share of the batch's wall time), method. `retry`: structures of a batch whose model call
    raised (one pathological graph sinks a batch): the caller relaxes them one by one.
    """
    import torch_sim as ts

    from crystalrl.mlip.torchsim import TorchSimModel, split_atoms

    model = TorchSimModel(mlip)
    init_fn, step_fn = ts.frechet_cell_fire(model, md_flavor="ase_fire", f_dec=F_DEC)
    n = len(atoms_list)
    rows: list[dict | None] = [None] * n
    retry: list[int] = []
    steps = np.zeros(n, dtype=int)
    seconds = np.zeros(n)
    volume0 = np.array([a.get_volume() for a in atoms_list])
    waiting = deque(range(n))
    active: list[int] = []
    state = None
    progress, finished = Progress("batched relaxation", n, log), 0
    while waiting or active:
        t0 = time.perf_counter()
        new = [waiting.popleft() for _ in range(min(len(waiting), batch_size - len(active)))]
        members = active + new
        try:
            if new:
                fresh = init_fn(ts.initialize_state([atoms_list[i] for i in new], model.device, model.dtype))
                fresh.velocities = torch.zeros_like(fresh.velocities)  # not NaN: see the module docstring
                fresh.cell_velocities = torch.zeros_like(fresh.cell_velocities)
                fresh.dt = fresh.dt / F_DEC
                state = fresh if state is None else ts.concatenate_states([state, fresh])
            active = members
            fmax_b = max_filter_force(state).cpu().numpy()
            energy_b = state.energy.detach().cpu().numpy()
            keep = []
            for b, (i, atoms) in enumerate(zip(active, split_atoms(state))):
                reason = guards.check(atoms, energy_b[b] / len(atoms), volume0[i])
                if reason:
                    rows[i] = {"status": f"failed: {reason} at step {steps[i]}", "converged": False}
                elif fmax_b[b] < fmax or steps[i] >= max_steps:
                    rows[i] = {"status": "ok", "converged": bool(fmax_b[b] < fmax),
                               "energy_final": energy_b[b] / len(atoms),
                               "cif_relaxed": AseAtomsAdaptor.get_structure(atoms).to(fmt="cif")}
                else:
                    keep.append(b)
            if len(keep) < len(active):
                state = state[keep] if keep else None
                active = [active[b] for b in keep]
            if state is not None:
                state = step_fn(state)
                steps[active] += 1
        except Exception as exc:  # noqa: BLE001 - a failed batch must not stop the chunk
            log.warning("batched relaxation of %d structures failed (%s: %s); relaxing them one by one",
                        len(members), type(exc).__name__, exc)
            retry += [i for i in members if rows[i] is None]
            active, state = [], None
        seconds[members] += (time.perf_counter() - t0) / len(members)
        now_finished = sum(r is not None for r in rows) + len(retry)
        progress.update(now_finished - finished)
        finished = now_finished
    for i, row in enumerate(rows):
        if row is not None:
            row.update(steps=int(steps[i]), seconds=float(seconds[i]), method="batched")
    return rows, retry
