"""Relaxation with CHGNet on real structures; broken structures fail alone."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Structure

from crystalrl.mlip import get_mlip
from crystalrl.relax import Guards, chunk_rows, relax_samples, relax_structures
from test_mlip import load_alexandria


@pytest.fixture(scope="module")
def chgnet():
    torch.set_num_threads(1)
    return get_mlip("chgnet")


def broken(s: Structure) -> Structure:
    """Two atoms 0.1 Å apart."""
    b = s.copy()
    b.append(b.species[0], b.sites[0].coords + np.array([0.1, 0, 0]), coords_are_cartesian=True)
    return b


@pytest.mark.slow
def test_relax_20_real_structures_lowers_energy(chgnet, shared_data):
    structures = load_alexandria(shared_data, 20, max_sites=6, seed=3)
    batch = structures[:10] + [broken(structures[0])] + structures[10:]
    df = relax_structures(chgnet, batch, fmax=0.1, max_steps=60)
    assert len(df) == 21
    assert df.loc[10, "status"].startswith("failed: atoms closer than 0.5")
    assert np.isnan(df.loc[10, "energy_final"]) and pd.isna(df.loc[10, "cif_relaxed"])
    ok = df.drop(index=10)
    assert (ok["status"] == "ok").all()
    assert (ok["energy_final"] <= ok["energy_initial"] + 1e-4).all()
    assert (ok["energy_final"] < ok["energy_initial"] - 1e-3).sum() >= 10  # real relaxation happened
    assert ok["converged"].mean() >= 0.8 and ((ok["steps"] > 0) | ok["converged"]).all()
    # the relaxed CIF is the relaxed structure: CHGNet gives its final energy back
    s = Structure.from_str(ok["cif_relaxed"].iloc[0], fmt="cif")
    assert chgnet.energies([s])[0] / len(s) == pytest.approx(ok["energy_final"].iloc[0], abs=1e-4)


def test_explosion_during_relaxation_is_marked_and_rest_continue(chgnet, shared_data):
    """A guard tripping mid-run (here: any volume change) fails that structure only."""
    s = load_alexandria(shared_data, 2, max_sites=4, seed=5)
    strained = s[0].copy()
    strained.scale_lattice(strained.volume * 1.3)  # must shrink back, so the volume changes
    df = relax_structures(chgnet, [strained, s[1]], fmax=0.1, max_steps=5,
                          guards=Guards(max_volume_ratio=1.0005))
    assert df.loc[0, "status"].startswith("failed: volume changed by a factor")
    assert df.loc[0, "steps"] >= 1 and np.isnan(df.loc[0, "energy_final"])
    assert np.isfinite(df.loc[0, "energy_initial"])
    # the next structure was still relaxed (it may trip the same strict guard later)
    assert df.loc[1, "steps"] >= 1 or df.loc[1, "converged"]
    assert df.loc[1, "status"] == "ok" or df.loc[1, "status"].startswith("failed: volume")


def test_guards():
    from ase import Atoms

    g = Guards()
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.2, 0, 0]], cell=[5, 5, 5], pbc=True)
    assert "collapsed" in g.check(atoms, -3.0, atoms.get_volume())
    atoms.positions[1] = [1.5, 0, 0]
    assert g.check(atoms, -3.0, atoms.get_volume()) is None
    assert "ran away" in g.check(atoms, -500.0, atoms.get_volume())
    assert "not finite" in g.check(atoms, float("nan"), atoms.get_volume())
    assert "volume" in g.check(atoms, -3.0, atoms.get_volume() * 10)


def test_relax_samples_with_hull_and_bad_cif(chgnet, shared_data):
    from crystalrl.hull import load_reference

    rows = pd.read_csv(shared_data / "mp20" / "mp20_rows.csv")
    pick = rows[rows["pretty_formula"].isin(["NaCl", "GaTe"])]
    samples = pd.DataFrame({"sample_id": ["a", "bad", "b", "none"],
                            "cif": [pick["cif"].iloc[0], "data_x\nnot a cif", pick["cif"].iloc[1], None]})
    ref = load_reference("mp_bundled")
    df = relax_samples(samples, chgnet, ref, fmax=0.1, max_steps=20)
    assert df["sample_id"].tolist() == ["a", "bad", "b", "none"]
    assert df.loc[1, "status"].startswith("failed: CIF does not parse")
    assert df.loc[3, "status"] == "failed: no CIF (sample was not decoded)"
    good = df.loc[[0, 2]]
    assert (good["status"] == "ok").all() and (good["hull_status"] == "ok").all()
    # CHGNet (trained on MP) puts these MP ground states near the MP hull
    assert np.all(np.abs(good["e_hull_final"]) < 0.05)
    assert np.all(good["e_hull_final"] <= good["e_hull_initial"] + 1e-4)
    assert np.isnan(df.loc[[1, 3], "e_hull_initial"]).all()


def test_chunks_cover_rows_in_order():
    parts = [chunk_rows(10, c, 3) for c in range(3)]
    assert np.concatenate(parts).tolist() == list(range(10))
    with pytest.raises(ValueError):
        chunk_rows(10, 3, 3)


def test_workflow_scripts(chgnet, shared_data, tmp_path, repo_root):
    """relax.py + merge_relax.py as Snakemake would call them, on 3 samples in 2 chunks."""
    s = load_alexandria(shared_data, 3, max_sites=4, seed=7)
    samples = pd.DataFrame({"sample_id": [10, 11, 12], "cif": [x.to(fmt="cif") for x in s]})
    samples.to_parquet(tmp_path / "samples.parquet")

    from crystalrl.stages import run_stage

    chunks = []
    for c in range(2):
        out = tmp_path / f"chunk_{c}.parquet"
        run_stage("relax", dict(samples=tmp_path / "samples.parquet", hull=[]), dict(chunk=out),
                  dict(relax={"fmax": 0.2, "max_steps": 5, "n_chunks": 2}, chunk=c,
                       mlip={"backend": "chgnet", "model": None, "weights_path": None, "device": "cpu",
                             "batch_size": 8},
                       hull={"reference": "mp_bundled", "elemental_entries": None}),
                  log=tmp_path / f"relax_{c}.log")
        chunks.append(out)
    run_stage("merge_relax", dict(chunks=chunks), dict(relaxed=tmp_path / "relaxed.parquet"), {})
    df = pd.read_parquet(tmp_path / "relaxed.parquet")
    assert df["sample_id"].tolist() == [10, 11, 12]
    for col in ["energy_initial", "energy_final", "e_hull_initial", "e_hull_final", "cif_relaxed",
                "converged", "steps", "status"]:
        assert col in df
    assert np.isfinite(df["energy_initial"]).all()


def test_chgnet_energies_already_carry_mp2020(chgnet, shared_data):
    """CHGNet ~= MP raw DFT energy + MP2020 correction (so the hull must not correct again)."""
    import gzip
    import json

    from pymatgen.entries.computed_entries import ComputedEntry

    from crystalrl.hull import bundled_calc_compounds_path, mp2020_entry

    with gzip.open(bundled_calc_compounds_path(), "rt") as fh:
        mp = {d["entry_id"]: ComputedEntry.from_dict(d) for d in json.load(fh).values()}
    rows = pd.read_csv(shared_data / "mp20" / "mp20_rows.csv")
    rows = rows[rows["material_id"].isin(mp)]
    assert set(rows["pretty_formula"]) == {"NaCl", "GaTe", "NaS"}
    structures = [Structure.from_str(c, fmt="cif") for c in rows["cif"]]
    e_chg = chgnet.energies(structures) / [len(s) for s in structures]
    for mid, s, e in zip(rows["material_id"], structures, e_chg):
        raw = mp[mid].uncorrected_energy_per_atom
        corr = mp2020_entry(s, raw * len(s)).correction / len(s)
        assert corr < -0.2  # anion corrections of a few tenths of an eV/atom
        assert abs(e - (raw + corr)) < 0.05 < abs(e - raw)
    assert chgnet.mp2020_corrected
