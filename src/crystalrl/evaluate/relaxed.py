"""Stability after relaxation (LeMat-GenBench, 2026) and a second-MLIP cross-check.

The paper judges samples as generated (`crystalrl.ehull`); LeMat-GenBench relaxes them
first, so a sample one FIRE run away from a minimum is not counted unstable. Here the
valid samples that have an e_hull as generated are relaxed with the run's MLIP
(`crystalrl.relax.relax_structures`, the relax stage's machinery) and placed on the same
hull. Per sample: e_hull_relaxed, rmsd_relax (StructureMatcher's RMS displacement between
the structure as generated and relaxed, normalised by (V/n)^(1/3); NaN where they no
longer match), relax_converged, cif_relaxed and relax_reason (why a relaxed e_hull is NaN).

The cross-check re-scores the rows stable as generated or relaxed with a second MLIP
(single points, same hull: the hull holds DFT energies, so only the MLIP changes): one
MLIP's artefact rarely repeats in another trained differently.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from crystalrl.ehull import e_hull_as_generated
from crystalrl.hull import e_above_hull
from crystalrl.relax import RelaxConfig, relax_structures
from crystalrl.structures import parse_many

#: The columns `relax_and_score` returns, in order.
RELAX_COLUMNS = ["e_hull_relaxed", "rmsd_relax", "relax_converged", "cif_relaxed", "relax_reason"]


def relax_config(section: dict) -> RelaxConfig:
    """The RelaxConfig of `evaluate.relax` (its FIRE keys; the rest: the `relax` section's defaults)."""
    return RelaxConfig.from_dict({k: v for k, v in section.items() if k != "enabled"})


def rmsd(before: Structure | None, after: Structure | None, matcher_kw: dict | None = None) -> float:
    """StructureMatcher's normalised RMS displacement from `before` to `after`; NaN where they don't match."""
    if before is None or after is None:
        return np.nan
    found = StructureMatcher(**(matcher_kw or {})).get_rms_dist(before, after)
    return float(found[0]) if found is not None else np.nan


def relax_and_score(structures: Sequence[Structure | None], todo_n: Sequence[bool], mlip, hull, cfg: RelaxConfig,
                    matcher_kw: dict | None = None, energy_n: Sequence[float] | None = None) -> pd.DataFrame:
    """Relax the structures where `todo_n` (n,) is true and place them on `hull`; a row per structure.

    `energy_n`: the MLIP's total energies (eV) of the structures as generated, where the
    caller scored them already; the relaxation then starts without a second single point.

    Columns RELAX_COLUMNS. Rows not in `todo_n` are NaN / False / None with an empty reason;
    a relaxation that fails or explodes keeps its row, NaN, with the reason.
    """
    n = len(structures)
    out = pd.DataFrame({"e_hull_relaxed": np.full(n, np.nan), "rmsd_relax": np.full(n, np.nan),
                        "relax_converged": np.zeros(n, dtype=bool), "cif_relaxed": [None] * n,
                        "relax_reason": [""] * n})
    idx_m = np.flatnonzero(np.asarray(todo_n, dtype=bool))
    if not len(idx_m):
        return out
    subset = [structures[i] for i in idx_m]
    known_m = None if energy_n is None else np.asarray(energy_n, dtype=float)[idx_m]
    rel = relax_structures(mlip, subset, cfg, energy_initial=known_m)
    relaxed, _ = parse_many([c if isinstance(c, str) else None for c in rel["cif_relaxed"]])
    n_atoms_m = np.array([len(s) for s in subset], dtype=float)
    e_hull_m, hull_status = e_above_hull(hull, relaxed, rel["energy_final"].to_numpy() * n_atoms_m, mlip)
    for j, i in enumerate(idx_m):
        status = rel.at[j, "status"]
        if status != "ok":
            out.at[i, "relax_reason"] = f"relaxation {status}"
            continue
        out.at[i, "cif_relaxed"] = rel.at[j, "cif_relaxed"]
        out.at[i, "relax_converged"] = bool(rel.at[j, "converged"])
        out.at[i, "rmsd_relax"] = rmsd(subset[j], relaxed[j], matcher_kw)
        out.at[i, "e_hull_relaxed"] = e_hull_m[j]
        if not np.isfinite(e_hull_m[j]):
            out.at[i, "relax_reason"] = f"relaxed e_hull: {hull_status[j]}"
    return out


def sun_relaxed(flags: pd.DataFrame, e_hull_relaxed: np.ndarray, sun_threshold: float,
                msun_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(SUN, MSUN) (n,) bool: valid & unique & novel (of `flags`) and e_hull_relaxed <= sun_threshold,
    resp. sun_threshold < e_hull_relaxed <= msun_threshold; NaN counts as neither."""
    base = (flags["valid"] & flags["unique"] & flags["novel"]).to_numpy(dtype=bool)
    e = np.nan_to_num(np.asarray(e_hull_relaxed, dtype=float), nan=np.inf)
    return base & (e <= sun_threshold), base & (e > sun_threshold) & (e <= msun_threshold)


def cross_check(structures: Sequence[Structure | None], relaxed: Sequence[Structure | None],
                e_hull: np.ndarray, e_hull_relaxed: np.ndarray, mlip, hull, *, stable_threshold: float,
                tolerance: float) -> pd.DataFrame:
    """`e_hull_check, check_agrees, check_flag` (n rows) from a second MLIP `mlip`.

    Scored: rows stable (e_hull < stable_threshold) as generated or relaxed; the structure the
    first MLIP judged is re-scored: the relaxed one where it has a relaxed e_hull, else the one as
    generated, and compared with that e_hull. check_agrees: both MLIPs put the row on the same
    side of stable_threshold; check_flag: they differ by more than `tolerance` eV/atom.
    """
    e_hull, e_hull_relaxed = np.asarray(e_hull, dtype=float), np.asarray(e_hull_relaxed, dtype=float)
    use_relaxed = np.isfinite(e_hull_relaxed)
    e_first = np.where(use_relaxed, e_hull_relaxed, e_hull)
    stable = (np.nan_to_num(e_hull, nan=np.inf) < stable_threshold) | \
             (np.nan_to_num(e_hull_relaxed, nan=np.inf) < stable_threshold)
    n = len(structures)
    e_check = np.full(n, np.nan)
    idx = np.flatnonzero(stable)
    if len(idx):
        chosen = [relaxed[i] if use_relaxed[i] else structures[i] for i in idx]
        e_check[idx], _ = e_hull_as_generated(chosen, mlip, hull)
    checked = np.isfinite(e_check) & np.isfinite(e_first)
    agrees = checked & ((e_check < stable_threshold) == (e_first < stable_threshold))
    flag = checked & (np.abs(np.where(checked, e_check - e_first, 0.0)) > tolerance)
    return pd.DataFrame({"e_hull_check": e_check, "check_agrees": agrees, "check_flag": flag})


def check_agreement(df: pd.DataFrame) -> tuple[int, float, int]:
    """(rows cross-checked, fraction where both MLIPs agree on stable, rows flagged) of an eval table."""
    checked = np.isfinite(df["e_hull_check"].to_numpy(dtype=float))
    n = int(checked.sum())
    return n, float(df["check_agrees"][checked].mean()) if n else np.nan, int(df["check_flag"].sum())
