"""The reference relaxation: ASE FIRE + FrechetCellFilter, one structure at a time.

As in the public CrystalFormer `mlff_relax.py` (fmax 0.1 eV/Å, at most 500 steps)
and matbench-discovery's relaxations, positions and cell relax together. Runs with
any MLIP (it only needs an ASE calculator) and with FixSymmetry.
"""
from __future__ import annotations

import logging
import time
import warnings

from ase import Atoms
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from pymatgen.io.ase import AseAtomsAdaptor

from crystalrl.logs import Progress

from .guards import Guards

log = logging.getLogger(__name__)


def relax_one(atoms: Atoms, *, fmax: float, max_steps: int, guards: Guards,
              fix_symmetry: bool = False) -> dict:
    """Relax one ASE Atoms (calculator attached) in place; returns a result row."""
    n = len(atoms)
    volume0 = atoms.get_volume()
    if fix_symmetry:
        from ase.constraints import FixSymmetry

        atoms.set_constraint(FixSymmetry(atoms))
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    converged = False
    for converged in opt.irun(fmax=fmax, steps=max_steps):
        reason = guards.check(atoms, atoms.get_potential_energy() / n, volume0)
        if reason:
            return {"status": f"failed: {reason} at step {opt.nsteps}", "steps": opt.nsteps,
                    "converged": False}
    return {"status": "ok", "steps": opt.nsteps, "converged": bool(converged),
            "energy_final": atoms.get_potential_energy() / n,
            "cif_relaxed": AseAtomsAdaptor.get_structure(atoms).to(fmt="cif")}


def relax_ase(calc, atoms_list: list[Atoms], *, fmax: float, max_steps: int, guards: Guards,
              fix_symmetry: bool = False) -> list[dict]:
    """`relax_one` for each structure with calculator `calc`; an exception fails that structure only."""
    rows = []
    progress = Progress("relaxation (ASE FIRE)", len(atoms_list), log)
    for atoms in atoms_list:
        t0 = time.perf_counter()
        atoms.calc = calc
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                row = relax_one(atoms, fmax=fmax, max_steps=max_steps, guards=guards, fix_symmetry=fix_symmetry)
        except Exception as exc:  # noqa: BLE001 - one structure must not stop the chunk
            row = {"status": f"failed: {type(exc).__name__}: {exc}", "steps": 0, "converged": False}
        row.update(seconds=time.perf_counter() - t0, method="ase")
        rows.append(row)
        progress.update()
    return rows
