"""Candidates a chemist can take further: a table, CIFs, one extxyz, DFT inputs, a benchmark export.

From a model's evaluated sample sets (`crystalrl.stages.evaluate`), the candidates are
the valid samples with e_hull (the run's MLIP + MP2020 + hull) at most
`candidates.max_e_hull` as generated or after the evaluation's relaxation (a sample far
above the hull as generated often relaxes onto it: on alexandria's data none of 400 base
samples was within 0.1 eV/atom as generated, 8 were after 50 FIRE steps), unique within
their set, best first by `sort_by`. For each:
- `cifs/<candidate_id>.cif` (pymatgen's CifWriter; the id is `<set>-<sample_id>`, as sample
  ids repeat across sample sets) and a frame of `<model>.extxyz` (ASE, with the id, formula,
  space group, e_hull, e_hull_relaxed and e_hull_check in its info);
- where the evaluation relaxed it (`evaluate.relax`), the relaxed structure beside it:
  `cifs/<candidate_id>_relaxed.cif` and a frame of `<model>_relaxed.extxyz` (a candidate
  whose relaxation failed has none: `cif_relaxed_file` is empty);
- for the first `top_n`, `dft/<candidate_id>/` written by pymatgen's `MPRelaxSet` from the
  relaxed structure where there is one (column `dft_structure`), a closer start for DFT (INCAR,
  KPOINTS, POSCAR and POTCAR.spec, the POTCAR symbols: POTCAR files are licensed, so a
  user with a VASP licence runs `pmg potcar` there, or sets PMG_VASP_PSP_DIR and rewrites
  the set). A structure our sanity check or pymatgen rejects keeps its row, with the
  reason in `dft_reason`, and gets no folder.
Beside them, `lemat_genbench.csv` holds every decodable sample of the model as
`cif_string` (LeMat-GenBench's input form), so the standard benchmark can be run on it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crystalrl.config import SectionConfig
from crystalrl.evaluate.validity import structure_validity
from crystalrl.structures import parse_structure

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandidatesConfig(SectionConfig):
    """Config section `candidates` (defaults in the schema)."""

    SECTION = "candidates"

    max_e_hull: float
    sort_by: str
    top_n: int


def candidate_table(evals: dict[str, pd.DataFrame], samples: dict[str, pd.DataFrame],
                    cfg: CandidatesConfig) -> pd.DataFrame:
    """The candidate rows of one model over its sample sets (set name -> eval table / samples
    table), best first, with the set and the sample's CIF text joined on."""
    parts = []
    for name, ev in evals.items():
        cif = samples[name].set_index("sample_id")["cif"]
        low = ev["e_hull"] <= cfg.max_e_hull  # NaN compares False
        if "e_hull_relaxed" in ev:
            low |= ev["e_hull_relaxed"] <= cfg.max_e_hull
        keep = ev["valid"] & ev["unique"] & low
        part = ev[keep].copy()
        part.insert(0, "candidate_id", name + "-" + part["sample_id"])  # sample ids repeat across sets
        part.insert(2, "set", name)
        part["cif"] = part["sample_id"].map(cif)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if table.empty:
        return table
    if cfg.sort_by not in table.columns:
        raise ValueError(f"config key 'candidates.sort_by': {cfg.sort_by!r} is not a column of the evaluation "
                         f"table ({', '.join(table.columns)})")
    return table.sort_values(cfg.sort_by, kind="stable").reset_index(drop=True)


def dft_input(structure, folder: Path, min_distance: float) -> str:
    """Write MPRelaxSet inputs (POTCAR.spec, no POTCAR) into `folder`; '' or why not."""
    from pymatgen.io.vasp.sets import MPRelaxSet

    ok, why = structure_validity(structure, cutoff=min_distance)
    if not ok:
        return f"not written: {why}"
    try:
        MPRelaxSet(structure).write_input(str(folder), potcar_spec=True)
    except Exception as exc:  # noqa: BLE001 - a structure pymatgen rejects keeps its row, with the reason
        return f"not written: MPRelaxSet: {type(exc).__name__}: {exc}"
    return ""


def write_candidates(table: pd.DataFrame, samples: dict[str, pd.DataFrame], model: str, folder: Path,
                     cfg: CandidatesConfig, min_distance: float, log: logging.Logger | None = None) -> pd.DataFrame:
    """Write the hand-off files of `table` (from `candidate_table`) into `folder`; the table
    written as candidates.csv, with the `cif_file` and `dft_dir` paths and `dft_reason`.
    `min_distance`: the evaluation's structural validity cut (`evaluate.min_distance`)."""
    from ase.io import write as ase_write
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifWriter

    log = log or _LOG
    (folder / "cifs").mkdir(parents=True, exist_ok=True)
    table = table.copy()
    for col in ("cif_file", "cif_relaxed_file", "dft_dir", "dft_structure", "dft_reason"):
        table[col] = ""
    frames, frames_relaxed = [], []
    for i, row in table.iterrows():
        structure = parse_structure(row["cif"])
        cif_file = Path("cifs") / f"{row['candidate_id']}.cif"
        CifWriter(structure).write_file(folder / cif_file)
        table.at[i, "cif_file"] = str(cif_file)
        info = dict(candidate_id=row["candidate_id"], formula=row["formula"], spacegroup=int(row["G"]),
                    **{k: float(row[k]) for k in ("e_hull", "e_hull_relaxed", "e_hull_check") if k in row})
        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.info.update(info)
        frames.append(atoms)
        relaxed = None
        if isinstance(row.get("cif_relaxed"), str) and row["cif_relaxed"]:
            relaxed = parse_structure(row["cif_relaxed"])
            relaxed_file = Path("cifs") / f"{row['candidate_id']}_relaxed.cif"
            CifWriter(relaxed).write_file(folder / relaxed_file)
            table.at[i, "cif_relaxed_file"] = str(relaxed_file)
            atoms = AseAtomsAdaptor.get_atoms(relaxed)
            atoms.info.update(info)
            frames_relaxed.append(atoms)
        if i < cfg.top_n:
            dft_dir = Path("dft") / str(row["candidate_id"])
            start = structure if relaxed is None else relaxed
            why = dft_input(start, folder / dft_dir, min_distance)
            table.at[i, "dft_dir" if not why else "dft_reason"] = str(dft_dir) if not why else why
            table.at[i, "dft_structure"] = "" if why else ("generated" if relaxed is None else "relaxed")
            if why:
                log.warning("candidate %s: DFT input %s", row["candidate_id"], why)
        else:
            table.at[i, "dft_reason"] = f"not in the top {cfg.top_n} by {cfg.sort_by}"
    if frames:
        ase_write(folder / f"{model}.extxyz", frames, format="extxyz")
    if frames_relaxed:
        ase_write(folder / f"{model}_relaxed.extxyz", frames_relaxed, format="extxyz")
    table.drop(columns=["cif", "cif_relaxed"], errors="ignore").to_csv(folder / "candidates.csv", index=False)
    every = pd.concat([pd.DataFrame({"id": name + "-" + s["sample_id"], "cif_string": s["cif"]})
                       [s["cif"].notna().to_numpy() & (s["cif"] != "").to_numpy()] for name, s in samples.items()],
                      ignore_index=True)
    every.to_csv(folder / "lemat_genbench.csv", index=False)
    log.info("%s: %d candidates (e_hull <= %g eV/atom as generated or relaxed), %d DFT input folders, %d samples in lemat_genbench.csv",
             model, len(table), cfg.max_e_hull, int((table["dft_dir"] != "").sum()), len(every))
    return table
