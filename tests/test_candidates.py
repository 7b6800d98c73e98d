"""The hand-off folder (crystalrl.evaluate.candidates): the table keeps every candidate, a
collapsed one with its reason and no DFT folder; CIFs and extxyz round-trip through ASE and
pymatgen; DFT folders are MPRelaxSet's without POTCARs; the benchmark export has every sample."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ase.io import read as ase_read
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crystalrl.evaluate.candidates import CandidatesConfig, candidate_table, write_candidates

GOOD = {"NaCl": Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "Si": Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]),
        "MgO": Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "LiF": Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.03), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]])}
RELAXED = {k: Structure(s.lattice.matrix * 1.02, s.species, s.frac_coords) for k, s in GOOD.items()}
COLLAPSED = Structure(Lattice.cubic(4.0), ["Fe", "O"], [[0, 0, 0], [0.01, 0, 0]])  # atoms 0.04 A apart


def _tables():
    structures = [GOOD["NaCl"], COLLAPSED, GOOD["Si"], GOOD["MgO"], None, GOOD["LiF"]]
    ids = [f"m-{i:06d}" for i in range(len(structures))]
    samples = pd.DataFrame({"sample_id": ids, "cif": [s.to(fmt="cif") if s is not None else "" for s in structures]})
    ev = pd.DataFrame({"sample_id": ids, "G": [225, 1, 227, 225, 1, 225],
                       "formula": ["NaCl", "FeO", "Si", "MgO", "", "LiF"], "valid": [True, True, True, True, False, True],
                       "unique": True, "e_hull": [0.05, -2.0, 0.0, 0.5, np.nan, 0.8],
                       # relaxed (evaluate.relax): NaCl, Si and LiF relaxed to a slightly larger cell, LiF onto
                       # the hull from 0.8 eV/atom above it (a candidate only after relaxation); FeO's failed
                       "e_hull_relaxed": [0.01, np.nan, -0.02, 0.4, np.nan, 0.05],
                       "e_hull_check": [0.03, np.nan, 0.01, np.nan, np.nan, 0.06],
                       "cif_relaxed": [RELAXED["NaCl"].to(fmt="cif"), None, RELAXED["Si"].to(fmt="cif"),
                                       GOOD["MgO"].to(fmt="cif"), None, RELAXED["LiF"].to(fmt="cif")]})
    return {"dist": ev}, {"dist": samples}


def test_candidates_folder_keeps_every_candidate_and_round_trips(tmp_path):
    evals, samples = _tables()
    cfg = CandidatesConfig.from_dict(dict(max_e_hull=0.1, top_n=2))
    table = write_candidates(candidate_table(evals, samples, cfg), samples, "m", tmp_path, cfg, min_distance=0.5)
    # MgO (0.5 eV/atom, 0.4 relaxed) and the undecodable sample are not candidates; the rest, best first,
    # LiF for its relaxed e_hull
    assert table["formula"].tolist() == ["FeO", "Si", "NaCl", "LiF"]
    collapsed = table.iloc[0]
    assert collapsed["dft_dir"] == "" and "interatomic distance" in collapsed["dft_reason"]
    assert not (tmp_path / "dft" / collapsed["candidate_id"]).exists()
    si = table.iloc[1]
    written = sorted(p.name for p in (tmp_path / si["dft_dir"]).iterdir())
    assert written == ["INCAR", "KPOINTS", "POSCAR", "POTCAR.spec"]  # no licensed POTCAR
    # DFT starts from the relaxed structure: the POSCAR has the relaxed cell
    poscar = Structure.from_file(tmp_path / si["dft_dir"] / "POSCAR")
    assert si["dft_structure"] == "relaxed" and collapsed["dft_structure"] == ""
    assert poscar.volume / len(poscar) == pytest.approx(RELAXED["Si"].volume / len(RELAXED["Si"]), rel=1e-4)
    assert table.iloc[2]["dft_reason"] == "not in the top 2 by e_hull"
    csv = pd.read_csv(tmp_path / "candidates.csv")
    assert csv["candidate_id"].tolist() == table["candidate_id"].tolist()

    # every CIF and every extxyz frame reads back, in both libraries, as the structure it came from
    frames = ase_read(tmp_path / "m.extxyz", index=":")
    assert [f.info["candidate_id"] for f in frames] == table["candidate_id"].tolist()
    for row, frame in zip(table.itertuples(), frames):
        via_pmg = Structure.from_file(tmp_path / row.cif_file)
        via_ase = AseAtomsAdaptor.get_structure(ase_read(tmp_path / row.cif_file))
        from_xyz = AseAtomsAdaptor.get_structure(frame)
        for s in (via_pmg, via_ase, from_xyz):
            assert s.composition.reduced_formula == row.formula and len(s) == len(via_pmg)
            assert s.lattice.volume == pytest.approx(via_pmg.lattice.volume, rel=1e-4)

    # the relaxed structures beside them: a CIF each and a frame of m_relaxed.extxyz; none for the failed one
    assert csv["e_hull_relaxed"].tolist()[1:] == [-0.02, 0.01, 0.05] and np.isnan(csv["e_hull_relaxed"][0])
    assert csv["e_hull_check"].tolist()[1:] == [0.01, 0.03, 0.06] and "cif_relaxed" not in csv
    assert table["cif_relaxed_file"].tolist() == [""] + [f"cifs/{c}_relaxed.cif" for c in table["candidate_id"][1:]]
    relaxed_frames = ase_read(tmp_path / "m_relaxed.extxyz", index=":")
    assert [f.info["candidate_id"] for f in relaxed_frames] == table["candidate_id"].tolist()[1:]
    assert [f.info["e_hull_relaxed"] for f in relaxed_frames] == [-0.02, 0.01, 0.05]
    assert np.isnan(frames[0].info["e_hull_relaxed"]) and frames[1].info["e_hull"] == 0.0
    for row, frame in zip(table.iloc[1:].itertuples(), relaxed_frames):
        expected = RELAXED[row.formula]
        via_pmg = Structure.from_file(tmp_path / row.cif_relaxed_file)
        via_ase = AseAtomsAdaptor.get_structure(ase_read(tmp_path / row.cif_relaxed_file))
        from_xyz = AseAtomsAdaptor.get_structure(frame)
        for s in (via_pmg, via_ase, from_xyz):
            assert s.composition.reduced_formula == row.formula
            assert s.lattice.volume / len(s) == pytest.approx(expected.lattice.volume / len(expected), rel=1e-4)
        assert via_pmg.lattice.volume > Structure.from_file(tmp_path / row.cif_file).lattice.volume * 1.05

    export = pd.read_csv(tmp_path / "lemat_genbench.csv")
    assert len(export) == 5 and all(Structure.from_str(c, fmt="cif") for c in export["cif_string"])


def test_unknown_sort_key_names_the_config_key():
    evals, samples = _tables()
    with pytest.raises(ValueError, match="candidates.sort_by"):
        candidate_table(evals, samples, CandidatesConfig.from_dict(dict(sort_by="ehull")))
