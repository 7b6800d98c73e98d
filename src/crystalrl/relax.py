"""MLIP relaxation of generated structures: ASE FIRE + FrechetCellFilter.

As in the public CrystalFormer `mlff_relax.py` (fmax 0.1 eV/Å, at most 500
steps), positions and cell relax together. Generated samples are often
unphysical, so every step is watched: a structure whose energy turns NaN or
runs off to -inf, whose atoms collapse onto each other, or whose volume changes
absurdly is marked failed and the next structure goes on. Initial energies
come from one batched MLIP call.
"""
from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from ase import Atoms
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from .mlip.base import MLIP
from .structures import parse_many

log = logging.getLogger(__name__)

COLUMNS = ["energy_initial", "energy_final", "cif_relaxed", "converged", "steps", "status", "seconds"]


@dataclass(frozen=True)
class Guards:
    """Limits beyond which a relaxation counts as exploded."""

    min_distance: float = 0.5          # Å, also the structural-validity cutoff of CDVAE/CrystalFormer
    min_energy_per_atom: float = -50.0  # eV/atom; real solids lie above about -15
    max_volume_ratio: float = 5.0       # V/V0 outside [1/r, r]

    def check(self, atoms: Atoms, energy_per_atom: float, volume0: float) -> str | None:
        """Why the current state is unphysical, or None."""
        if not np.isfinite(energy_per_atom):
            return "energy is not finite"
        if energy_per_atom < self.min_energy_per_atom:
            return f"energy ran away ({energy_per_atom:.1f} eV/atom)"
        ratio = atoms.get_volume() / volume0
        if not (1 / self.max_volume_ratio <= ratio <= self.max_volume_ratio):
            return f"volume changed by a factor {ratio:.3g}"
        d = min_distance(atoms)
        if d < self.min_distance:
            return f"atoms collapsed ({d:.2f} Å apart)"
        return None


def min_distance(atoms: Atoms) -> float:
    """Shortest interatomic distance under periodic boundary conditions."""
    if len(atoms) < 2:
        # a single atom only sees its own periodic images
        return float(np.min(np.linalg.norm(atoms.cell.array, axis=1)))
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def relax_one(atoms: Atoms, *, fmax: float, max_steps: int, guards: Guards,
              fix_symmetry: bool = False) -> dict:
    """Relax one ASE Atoms (calculator attached) in place; returns a result row."""
    n = len(atoms)
    volume0 = atoms.get_volume()
    if fix_symmetry:
        from ase.constraints import FixSymmetry

        atoms.set_constraint(FixSymmetry(atoms))
    filt = FrechetCellFilter(atoms)
    opt = FIRE(filt, logfile=None)
    converged = False
    for converged in opt.irun(fmax=fmax, steps=max_steps):
        reason = guards.check(atoms, atoms.get_potential_energy() / n, volume0)
        if reason:
            return {"status": f"failed: {reason} at step {opt.nsteps}", "steps": opt.nsteps,
                    "converged": False}
    return {"status": "ok", "steps": opt.nsteps, "converged": bool(converged),
            "energy_final": atoms.get_potential_energy() / n,
            "cif_relaxed": AseAtomsAdaptor.get_structure(atoms).to(fmt="cif")}


def relax_structures(mlip: MLIP, structures: Sequence[Structure | None], *, fmax: float = 0.1,
                     max_steps: int = 500, batch_size: int = 32, fix_symmetry: bool = False,
                     guards: Guards | None = None) -> pd.DataFrame:
    """Relax each structure with `mlip`; one row per input, in order.

    Columns: energy_initial, energy_final (eV/atom), cif_relaxed (str or None),
    converged, steps, status ('ok' | 'failed: <reason>'), seconds. A failed row
    keeps its initial energy when the MLIP gave one; energy_final is NaN.
    """
    guards = guards or Guards()
    n = len(structures)
    atoms_list = [None if s is None else AseAtomsAdaptor.get_atoms(s) for s in structures]
    d_min = [np.inf if a is None else min_distance(a) for a in atoms_list]
    # Overlapping atoms (common in samples of a weak model) blow up MLIP neighbour lists:
    # minutes and gigabytes per batch. They are failed before the MLIP sees them.
    sendable = [s if d >= guards.min_distance else None for s, d in zip(structures, d_min)]
    init = mlip.predict(sendable, batch_size=batch_size, properties=("energy",))
    rows = []
    calc = mlip.calculator()
    for i, (s, atoms, d) in enumerate(zip(structures, atoms_list, d_min)):
        t0 = time.perf_counter()
        row = {"energy_initial": np.nan, "energy_final": np.nan, "cif_relaxed": None,
               "converged": False, "steps": 0, "status": "ok"}
        if s is None:
            row["status"] = "failed: no structure"
        elif d < guards.min_distance:
            row["status"] = f"failed: atoms closer than {guards.min_distance} Å ({d:.2f} Å) before relaxing"
        else:
            row["energy_initial"] = init["energy"][i] / len(s)
            if init["error"][i]:
                row["status"] = f"failed: {init['error'][i]}"
            else:
                atoms.calc = calc
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        row.update(relax_one(atoms, fmax=fmax, max_steps=max_steps, guards=guards,
                                             fix_symmetry=fix_symmetry))
                except Exception as exc:  # noqa: BLE001 - one structure must not stop the chunk
                    row["status"] = f"failed: {type(exc).__name__}: {exc}"
        row["seconds"] = time.perf_counter() - t0
        if row["status"] != "ok":
            log.info("structure %d/%d: %s", i + 1, n, row["status"])
        rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"converged": bool, "steps": int})


def relax_samples(samples: pd.DataFrame, mlip: MLIP, reference=None, *, fmax: float = 0.1,
                  max_steps: int = 500, batch_size: int = 32, fix_symmetry: bool = False,
                  id_column: str = "sample_id") -> pd.DataFrame:
    """Relax the `cif` column of `samples` and place both ends on the hull.

    Returns `sample_id, energy_initial, energy_final, e_hull_initial, e_hull_final,
    cif_relaxed, converged, steps, status, hull_status, seconds` (energies eV/atom,
    e_hull eV/atom against `reference`, a `crystalrl.hull.HullReference`, or NaN
    when it is None; hull_status says why an e_hull is NaN). Rows keep the input order.
    """
    if "cif" not in samples or id_column not in samples:
        raise KeyError(f"samples need columns {id_column!r} and 'cif'; have {list(samples.columns)}")
    structures, errors = parse_many(samples["cif"].tolist())
    df = relax_structures(mlip, structures, fmax=fmax, max_steps=max_steps,
                          batch_size=batch_size, fix_symmetry=fix_symmetry)
    for i, err in enumerate(errors):
        if err:
            df.loc[i, "status"] = f"failed: {err}"
    df.insert(0, id_column, samples[id_column].to_numpy())
    df["e_hull_initial"] = np.nan
    df["e_hull_final"] = np.nan
    if reference is not None:
        n_atoms = np.array([len(s) if s is not None else 0 for s in structures], dtype=float)
        corr = {"apply_mp2020": not mlip.mp2020_corrected}
        eh0, st0 = reference.e_above_hull((structures, df["energy_initial"].to_numpy() * n_atoms), **corr)
        relaxed, _ = parse_many(df["cif_relaxed"].tolist())
        eh1, _ = reference.e_above_hull((relaxed, df["energy_final"].to_numpy() * n_atoms), **corr)
        df["e_hull_initial"] = eh0
        df["e_hull_final"] = eh1
        df["hull_status"] = st0
    else:
        df["hull_status"] = "no hull reference"
    return df[[id_column, "energy_initial", "energy_final", "e_hull_initial", "e_hull_final",
               "cif_relaxed", "converged", "steps", "status", "hull_status", "seconds"]]


def chunk_rows(n_rows: int, chunk: int, n_chunks: int) -> np.ndarray:
    """Row indices of chunk `chunk` (0-based) of `n_chunks` contiguous, balanced chunks.

    Contiguous chunks keep the input order when the chunk outputs are concatenated.
    """
    if not 0 <= chunk < n_chunks:
        raise ValueError(f"chunk {chunk} out of range for n_chunks={n_chunks}")
    return np.array_split(np.arange(n_rows), n_chunks)[chunk]
