"""Relax structures or sample tables with an MLIP: batched where it can, ASE one by one where not.

Generated samples are often unphysical, so every step is watched (`Guards`): a
structure whose energy turns NaN or runs off to -inf, whose atoms collapse onto
each other, or whose volume changes absurdly is marked failed and the others go
on. Initial energies come from one batched MLIP call.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crystalrl.config import ConfigError
from crystalrl.hull import e_above_hull
from crystalrl.mlip.base import MLIP
from crystalrl.structures import parse_many

from .ase_fire import relax_ase
from .batched import relax_batched
from .config import RelaxConfig
from .guards import Guards, min_distance

log = logging.getLogger(__name__)

COLUMNS = ["energy_initial", "energy_final", "cif_relaxed", "converged", "steps", "status", "seconds", "method"]


def choose_method(mlip: MLIP, cfg: RelaxConfig) -> str:
    """"batched" or "ase" for `cfg.method`; ConfigError when "batched" cannot run."""
    why_not = None
    if not mlip.batched:
        why_not = f"{mlip!r} evaluates one structure at a time (an ASE calculator)"
    elif cfg.fix_symmetry:
        why_not = "fix_symmetry needs ASE's FixSymmetry"
    else:
        try:
            import torch_sim  # noqa: F401
        except ImportError:
            why_not = "torch-sim-atomistic is not installed (pip install 'crystalrl[mlip]')"
    if cfg.method == "batched" and why_not:
        raise ConfigError(f"config key 'relax.method': batched relaxation is not possible: {why_not}")
    if cfg.method == "ase" or why_not:
        return "ase"
    return "batched"


def relax_structures(mlip: MLIP, structures: Sequence[Structure | None], cfg: RelaxConfig,
                     *, guards: Guards | None = None, energy_initial: Sequence[float] | None = None) -> pd.DataFrame:
    """Relax each structure with `mlip`; one row per input, in order.

    `energy_initial` (n,): the MLIP's total energies (eV) of the structures as given, when
    the caller has them (evaluation scored them already): no second single-point pass.
    A NaN there still goes to the MLIP.

    Columns: energy_initial, energy_final (eV/atom), cif_relaxed (str or None),
    converged, steps, status ('ok' | 'failed: <reason>'), seconds, method ('batched' |
    'ase'). A failed row keeps its initial energy when the MLIP gave one; energy_final
    is NaN. A structure still moving after `max_steps` is 'ok' with converged False.
    """
    guards = guards or Guards()
    method = choose_method(mlip, cfg)
    n = len(structures)
    rows = [{"energy_initial": np.nan, "energy_final": np.nan, "cif_relaxed": None, "converged": False,
             "steps": 0, "status": "ok", "seconds": 0.0, "method": method} for _ in range(n)]
    atoms = [None if s is None else AseAtomsAdaptor.get_atoms(s) for s in structures]
    d_min = [np.inf if a is None else min_distance(a) for a in atoms]
    # Overlapping atoms (common in samples of a weak model) blow up MLIP neighbour lists:
    # minutes and gigabytes per batch. They are failed before the MLIP sees them.
    sendable = [s if d >= guards.min_distance else None for s, d in zip(structures, d_min)]
    known = np.full(n, np.nan) if energy_initial is None else np.asarray(energy_initial, dtype=float)
    if known.shape != (n,):
        raise ValueError(f"energy_initial has shape {known.shape} for {n} structures")
    ask = [s if not np.isfinite(e) else None for s, e in zip(sendable, known)]
    init = {"energy": known.copy(), "error": [None] * n}
    if any(s is not None for s in ask):
        pred = mlip.predict(ask, properties=("energy",))
        for i, s in enumerate(ask):
            if s is not None:
                init["energy"][i], init["error"][i] = pred["energy"][i], pred["error"][i]
    todo = []
    for i, (s, d) in enumerate(zip(structures, d_min)):
        if s is None:
            rows[i]["status"] = "failed: no structure"
        elif d < guards.min_distance:
            rows[i]["status"] = f"failed: atoms closer than {guards.min_distance} Å ({d:.2f} Å) before relaxing"
        else:
            rows[i]["energy_initial"] = init["energy"][i] / len(s)
            if init["error"][i]:
                rows[i]["status"] = f"failed: {init['error'][i]}"
            else:
                todo.append(i)
    kw = dict(fmax=cfg.fmax, max_steps=cfg.max_steps, guards=guards)
    one_by_one = todo
    if method == "batched" and todo:
        done, retry = relax_batched(mlip, [atoms[i] for i in todo], batch_size=cfg.batch_size, **kw)
        for j, row in enumerate(done):
            if row is not None:
                rows[todo[j]].update(row)
        one_by_one = [todo[j] for j in retry]
    if one_by_one:
        calc = mlip.calculator()
        for i, row in zip(one_by_one, relax_ase(calc, [atoms[i] for i in one_by_one],
                                                fix_symmetry=cfg.fix_symmetry, **kw)):
            rows[i].update(row)
    for i, row in enumerate(rows):
        if row["status"] != "ok":
            log.info("structure %d/%d: %s", i + 1, n, row["status"])
    return pd.DataFrame(rows, columns=COLUMNS).astype({"converged": bool, "steps": int})


def relax_samples(samples: pd.DataFrame, mlip: MLIP, reference, cfg: RelaxConfig, *,
                  id_column: str = "sample_id") -> pd.DataFrame:
    """Relax the `cif` column of `samples` and place both ends on the hull.

    Returns `sample_id, energy_initial, energy_final, e_hull_initial, e_hull_final,
    cif_relaxed, converged, steps, status, hull_status, seconds, method` (energies eV/atom,
    e_hull eV/atom against `reference`, a `crystalrl.hull.HullReference`, or NaN
    when it is None; hull_status says why an e_hull is NaN). Rows keep the input order.
    """
    if "cif" not in samples or id_column not in samples:
        raise KeyError(f"samples need columns {id_column!r} and 'cif'; have {list(samples.columns)}")
    structures, errors = parse_many(samples["cif"].tolist())
    df = relax_structures(mlip, structures, cfg)
    for i, err in enumerate(errors):
        if err:
            df.loc[i, "status"] = f"failed: {err}"
    df.insert(0, id_column, samples[id_column].to_numpy())
    df["e_hull_initial"] = np.nan
    df["e_hull_final"] = np.nan
    if reference is not None:
        n_atoms = np.array([len(s) if s is not None else 0 for s in structures], dtype=float)
        eh0, st0 = e_above_hull(reference, structures, df["energy_initial"].to_numpy() * n_atoms, mlip)
        relaxed, _ = parse_many(df["cif_relaxed"].tolist())
        eh1, _ = e_above_hull(reference, relaxed, df["energy_final"].to_numpy() * n_atoms, mlip)
        df["e_hull_initial"] = eh0
        df["e_hull_final"] = eh1
        df["hull_status"] = st0
    else:
        df["hull_status"] = "no hull reference"
    return df[[id_column, "energy_initial", "energy_final", "e_hull_initial", "e_hull_final",
               "cif_relaxed", "converged", "steps", "status", "hull_status", "seconds", "method"]]


def chunk_rows(n_rows: int, chunk: int, n_chunks: int) -> np.ndarray:
    """Row indices of chunk `chunk` (0-based) of `n_chunks` contiguous, balanced chunks.

    Contiguous chunks keep the input order when the chunk outputs are concatenated.
    """
    if not 0 <= chunk < n_chunks:
        raise ValueError(f"chunk {chunk} out of range for n_chunks={n_chunks}")
    return np.array_split(np.arange(n_rows), n_chunks)[chunk]
