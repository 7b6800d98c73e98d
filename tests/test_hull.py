"""MP2020 entries and e_above_hull against real MP data."""
from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.entries.computed_entries import ComputedEntry

from crystalrl.config import ConfigError
from crystalrl.hull import (HullConfig, HullReference, bundled_calc_compounds_path, check_config, load_hull,
                            load_reference, mp2020_entry, mp_hubbard_u)

# The seven MP-20 rows whose MP e_above_hull comes from phases MP-20 lacks (data README).
LOWER_ROWS = {"HoWClO4", "Zn3N2", "LiS4", "Cs2KBiI6", "Na3MnCoNiO6", "LiCSN", "Cs2NaMoI6"}


@pytest.fixture(scope="module")
def calc_compounds() -> dict:
    with gzip.open(bundled_calc_compounds_path(), "rt") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def mp_bundled() -> HullReference:
    return load_reference("mp_bundled")


@pytest.fixture(scope="module")
def mp20_rows(shared_data) -> pd.DataFrame:
    return pd.read_csv(shared_data / "mp20" / "mp20_rows.csv")


@pytest.fixture(scope="module")
def mp20_hull(shared_data) -> HullReference:
    """Formation energies only (no elemental references): formation-energy queries only."""
    return load_reference(shared_data / "mp20" / "mp20_formation_energies.csv.gz")


def mp_hull_section(shared_data) -> dict:
    """The `hull` config section of config/alexandria.yaml, with this machine's paths."""
    return {"reference": str(shared_data / "mp20" / "mp20_formation_energies.csv.gz"),
            "format": "formation_table", "path": None, "url": None,
            "elemental_entries": str(shared_data / "mp_entries" / "mp_elemental_reference_entries.json.gz")}


@pytest.fixture(scope="module")
def mp_hull(shared_data) -> HullReference:
    """The MP hull as the workflow builds it from config: MP-20 formation energies + MP elemental entries."""
    return load_hull(HullConfig.from_dict(mp_hull_section(shared_data)))


@pytest.fixture(scope="module")
def mp20_on_hull(mp20_rows, shared_data):
    """The MP-20 rows that are in the formation table (35 of 44), their structures and MACE-MP energies.

    The table's `mace_energy` is MACE-MP-0's total energy of the row's cell: an MLIP trained
    on uncorrected MPtrj energies, exactly what matbench-discovery MP2020-corrects."""
    table = pd.read_csv(shared_data / "mp20" / "mp20_formation_energies.csv.gz").set_index("material_id")
    rows = mp20_rows[mp20_rows["material_id"].isin(table.index)].reset_index(drop=True)
    structures = [Structure.from_str(c, fmt="cif") for c in rows["cif"]]
    mace = np.array([table.loc[m, "mace_energy"] / table.loc[m, "natoms"] * len(s)
                     for m, s in zip(rows["material_id"], structures)])
    return rows, structures, mace


def formation_queries(rows) -> list[PDEntry]:
    comps = [Composition(f) for f in rows["pretty_formula"]]
    return [PDEntry(c, ef * c.num_atoms) for c, ef in zip(comps, rows["formation_energy_per_atom"])]


def test_hubbard_u_matches_every_mp_entry(calc_compounds):
    """Our U values equal the ones MP actually used, for all 423 bundled entries (113 GGA+U)."""
    n_u = 0
    for key, d in calc_compounds.items():
        used = {el: u for el, u in (d["parameters"].get("hubbards") or {}).items() if u}
        assert mp_hubbard_u(Composition(d["composition"])) == used, key
        n_u += bool(used)
    assert n_u == 113


def test_mp2020_entry_corrections():
    fe2o3 = Structure(Lattice.cubic(4.0), ["Fe", "Fe", "O", "O", "O"],
                      [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]])
    e = mp2020_entry(fe2o3, -40.0)
    assert e.parameters["run_type"] == "GGA+U" and e.parameters["hubbards"] == {"Fe": 5.3}
    names = " ".join(a.name for a in e.energy_adjustments)
    assert "oxide" in names and "mixing correction (Fe)" in names
    assert e.correction < 0 and e.energy == pytest.approx(-40.0 + e.correction)
    # Fe without O/F is plain GGA and gets no U correction.
    fe = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert mp2020_entry(fe, -16.0).parameters["run_type"] == "GGA"


def test_bundled_mp_hull_entries_on_hull(mp_bundled):
    """MP entries stable in MP have e_hull = 0 against the MP2020-processed bundled set."""
    entries = [e for v in mp_bundled.by_chemsys.values() for e in v]
    stable = [e for e in entries if e.data.get("e_above_hull", 1.0) == 0]
    assert len(stable) > 300
    eh, status = mp_bundled.e_above_hull(stable)
    assert set(status) == {"ok"}
    np.testing.assert_allclose(eh, 0.0, atol=1e-6)
    # A subset of MP's phases gives a hull at or above MP's: no entry lands higher than in MP.
    others = [e for e in entries if e.data.get("e_above_hull", 0) > 0]
    eh_o, _ = mp_bundled.e_above_hull(others)
    assert len(others) > 30
    assert np.all(eh_o <= np.array([e.data["e_above_hull"] for e in others]) + 1e-6)


def test_raw_energies_would_fail(calc_compounds):
    """Without MP2020 the GGA/GGA+U energies do not mix: some MP-stable entries land above."""
    raw = load_reference(bundled_calc_compounds_path(), mp2020=False)
    stable = [e for v in raw.by_chemsys.values() for e in v if e.data.get("e_above_hull", 1) == 0]
    eh, _ = raw.e_above_hull(stable)
    assert np.sum(eh > 1e-3) >= 5


def test_mp20_rows_against_mp_hull_from_config(mp20_rows, mp_hull):
    """The data README's fact through the config path: 37/44 within 0.02 eV/atom, the 7 known rows lower, none higher."""
    eh, status = mp_hull.e_above_hull(formation_queries(mp20_rows))
    assert status == ["ok"] * 44
    d = eh - mp20_rows["e_above_hull"].to_numpy()
    assert (np.abs(d) <= 0.02).sum() == 37
    assert set(mp20_rows["pretty_formula"][d < -0.02]) == LOWER_ROWS
    assert not np.any(d > 0.02)


def test_total_energy_lands_where_formation_energy_would(shared_data, mp20_rows, mp_hull):
    """E = N E_form + sum n_i mu_i - (MP2020 correction), placed as an MLIP energy, gives the formation
    energy's e_hull exactly; mu_i read here straight from the entries file (lowest eV/atom, 4 decimals)."""
    with gzip.open(shared_data / "mp_entries" / "mp_elemental_reference_entries.json.gz", "rt") as fh:
        raw = json.load(fh)
    mu = {el: round(d["energy"] / sum(d["composition"].values()), 4) for el, d in raw.items()}
    structures = [Structure.from_str(c, fmt="cif") for c in mp20_rows["cif"]]
    corr = np.array([mp2020_entry(s, 0.0).correction for s in structures])
    assert np.sum(corr < -0.5) >= 15  # oxides, sulfides, halides, U metals: the correction matters here
    e_dft = np.array([ef * len(s) + sum(n * mu[el.symbol] for el, n in s.composition.items())
                      for ef, s in zip(mp20_rows["formation_energy_per_atom"], structures)])
    eh_form, _ = mp_hull.e_above_hull(formation_queries(mp20_rows))
    eh_raw, status = mp_hull.e_above_hull((structures, e_dft - corr))  # uncorrected, as MACE or SevenNet predict
    assert status == ["ok"] * 44
    np.testing.assert_allclose(eh_raw, eh_form, atol=1e-6)
    eh_corr, _ = mp_hull.e_above_hull((structures, e_dft), apply_mp2020=False)  # already corrected (CHGNet)
    np.testing.assert_allclose(eh_corr, eh_form, atol=1e-6)
    shifted, _ = mp_hull.e_above_hull((structures, e_dft - corr + 0.1 * np.array([len(s) for s in structures])))
    np.testing.assert_allclose(shifted, eh_form + 0.1, atol=1e-6)


def test_mace_energies_need_mp2020_on_the_formation_hull(mp20_on_hull, mp_hull):
    """Real MLIP energies: MACE-MP-0 (trained on uncorrected energies) lands within its own error of the
    DFT formation energy's e_hull after MP2020; without the corrections it misses oxides and halides."""
    rows, structures, mace = mp20_on_hull
    assert len(rows) == 35
    eh_form, _ = mp_hull.e_above_hull(formation_queries(rows))
    eh, status = mp_hull.e_above_hull((structures, mace))
    assert status == ["ok"] * 35
    d = np.abs(eh - eh_form)
    assert np.median(d) < 0.02 and (d < 0.05).sum() >= 32, np.round(d, 3)
    wrong, _ = mp_hull.e_above_hull((structures, mace), apply_mp2020=False)
    assert (np.abs(wrong - eh_form) < 0.05).sum() <= 20


def test_chgnet_energies_are_already_mp2020(mp20_on_hull, mp_hull):
    """CHGNet (mp2020_corrected) goes on the hull uncorrected, as in matbench-discovery; correcting
    it again would put half the rows off by more than 0.05 eV/atom."""
    from crystalrl.hull import e_above_hull
    from crystalrl.mlip import MLIPConfig, load_mlip

    rows, structures, _ = mp20_on_hull
    mlip = load_mlip(MLIPConfig.from_dict({"backend": "chgnet", "device": "cpu"}))
    assert mlip.mp2020_corrected
    energies = mlip.energies(structures)
    eh_form, _ = mp_hull.e_above_hull(formation_queries(rows))
    d = np.abs(e_above_hull(mp_hull, structures, energies, mlip=mlip)[0] - eh_form)
    assert np.median(d) < 0.04 and (d < 0.05).sum() >= 28, np.round(d, 3)
    twice, _ = mp_hull.e_above_hull((structures, energies), apply_mp2020=True)
    assert (np.abs(twice - eh_form) < 0.05).sum() <= 20


def test_hull_config_is_strict_and_defaults_live_in_the_schema(shared_data, tmp_path):
    import dataclasses

    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(HullConfig))
    assert HullConfig.schema_keys() == {f.name for f in dataclasses.fields(HullConfig)}
    assert HullConfig.from_dict({}).reference == "alexandria"  # the schema's default
    with pytest.raises(ConfigError, match="hull.elemental_entry"):
        HullConfig.from_dict({"elemental_entry": "x.json"})
    with pytest.raises(ConfigError, match="hull.format"):
        HullConfig.from_dict({"format": "csv"})
    cfg = HullConfig.from_dict(mp_hull_section(shared_data))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.reference = "mp_bundled"
    assert cfg.input_files() == [cfg.reference, cfg.elemental_entries]
    no_refs = dataclasses.replace(cfg, elemental_entries=None)
    with pytest.raises(ValueError, match="hull.elemental_entries"):
        load_hull(no_refs)
    assert load_hull(HullConfig.from_dict({"reference": "mp_bundled"})).energy_kind == "total"


def test_check_config_names_the_key(shared_data, tmp_path):
    good = mp_hull_section(shared_data)
    assert check_config(good) == []
    assert check_config({"reference": "mp_bundled"}) == []
    problems = check_config({**good, "elemental_entries": None})
    assert len(problems) == 1 and problems[0].startswith("config key 'hull.elemental_entries'")
    problems = check_config({**good, "elemental_entries": str(tmp_path / "refs.json.gz")})
    assert problems == [f"config key 'hull.elemental_entries': {tmp_path / 'refs.json.gz'} does not exist"]
    assert check_config({**good, "reference": "nowhere.csv"}, root=tmp_path)[0].startswith(
        "config key 'hull.reference': nowhere.csv does not exist")
    (tmp_path / "wrong.csv").write_text("formula,energy\nNaCl,-2\n")
    assert "needs columns" in check_config({**good, "reference": "wrong.csv"}, root=tmp_path)[0]
    alex = check_config({"reference": "alexandria", "path": "hull.json.bz2", "url": None}, root=tmp_path)
    assert alex and alex[0].startswith("config key 'hull.path'") and "hull.url" in alex[0]
    assert check_config({"reference": "alexandria", "path": "hull.json.bz2"}, root=tmp_path) == []  # url default
    assert check_config({"referense": "mp_bundled"})[0].startswith("config key 'hull.referense': unknown key")


def test_formation_reference_with_refs_to_parquet(tmp_path, shared_data, mp20_rows, mp_hull, mp20_on_hull):
    mp_hull.to_parquet(tmp_path / "mp.parquet")
    back = load_hull(HullConfig.from_dict({"reference": str(tmp_path / "mp.parquet")}))
    assert back.elemental_refs == mp_hull.elemental_refs and len(back) == len(mp_hull)
    _, structures, mace = mp20_on_hull
    np.testing.assert_allclose(back.e_above_hull((structures, mace))[0],
                               mp_hull.e_above_hull((structures, mace))[0], atol=1e-9)


def test_structures_and_total_energies(mp20_rows, mp_bundled, calc_compounds):
    """The (structures, MLIP energies) path: MP's own DFT energies of NaCl, NaS, GaTe land on the hull."""
    by_id = {d["entry_id"]: d for d in calc_compounds.values()}
    rows = mp20_rows[mp20_rows["material_id"].isin(by_id)]
    assert len(rows) == 3
    structures = [Structure.from_str(c, fmt="cif") for c in rows["cif"]]
    energies = [ComputedEntry.from_dict(by_id[m]).uncorrected_energy_per_atom * len(s)
                for m, s in zip(rows["material_id"], structures)]
    eh, status = mp_bundled.e_above_hull((structures, energies))
    assert status == ["ok"] * 3
    np.testing.assert_allclose(eh, 0.0, atol=1e-6)
    # 0.1 eV/atom more -> 0.1 eV/atom above the hull
    eh2, _ = mp_bundled.e_above_hull((structures, [e + 0.1 * len(s) for e, s in zip(energies, structures)]))
    np.testing.assert_allclose(eh2, 0.1, atol=1e-6)


def test_missing_elements_and_bad_rows_do_not_crash(mp20_hull, mp_bundled):
    ok = PDEntry(Composition("NaCl"), -2.1 * 2)
    no_og = PDEntry(Composition("NaOg"), -1.0)  # oganesson: no reference
    nan = PDEntry(Composition("NaCl"), float("nan"))
    eh, status = mp20_hull.e_above_hull([ok, no_og, nan, ok])
    assert np.isfinite(eh[[0, 3]]).all() and np.isnan(eh[[1, 2]]).all()
    assert status[1] == "missing reference for elements: Og"
    assert status[2].startswith("failed") and status[0] == status[3] == "ok"
    # formation-energy references refuse MLIP total energies with a clear message
    with pytest.raises(ValueError, match="elemental"):
        mp20_hull.e_above_hull(([None], [1.0]))
    # structures: None and NaN energies are reported per row
    s = Structure(Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    eh, status = mp_bundled.e_above_hull(([s, None, s], [-7.0, -7.0, np.nan]))
    assert np.isfinite(eh[0]) and status[1] == "failed: no structure" and "NaN" in status[2]


def test_phase_diagrams_cached_per_chemsys(mp_bundled):
    ref = load_reference("mp_bundled")
    q = [PDEntry(Composition(f), -5.0 * Composition(f).num_atoms)
         for f in ["NaCl", "Na2Cl", "NaCl3", "LiFeO2", "Li2FeO3", "FeLiO", "Fe"]]
    ref.e_above_hull(q)
    assert set(ref._pd_cache) == {("Cl", "Na"), ("Fe", "Li", "O"), ("Fe",)}
    pd1 = ref.phase_diagram(["Na", "Cl"])
    assert ref.phase_diagram(["Cl", "Na"]) is pd1
    # the PD of Li-Fe-O holds exactly the entries whose elements are a subset
    assert {frozenset(e.composition.chemical_system.split("-")) for e in ref.entries_for(["Li", "Fe", "O"])} <= {
        frozenset(s) for s in [["Li"], ["Fe"], ["O"], ["Fe", "Li"], ["Li", "O"], ["Fe", "O"], ["Fe", "Li", "O"]]}


def test_alexandria_format_and_parquet(tmp_path, mp_bundled):
    """Alexandria's {"entries": [ComputedStructureEntry dicts]} json.bz2 loads (structures dropped)."""
    ents = [e for k, v in mp_bundled.by_chemsys.items() if k <= {"Na", "Cl", "Li", "O"} for e in v]
    s = Structure(Lattice.cubic(3.0), ["Na"], [[0, 0, 0]]).as_dict()
    dicts = [{**e.as_dict(), "@class": "ComputedStructureEntry", "structure": s} for e in ents]
    path = tmp_path / "convex_hull_pbe_test.json.bz2"
    with bz2.open(path, "wt") as fh:
        json.dump({"entries": dicts}, fh)
    alex = load_reference(path)
    assert len(alex) == len(ents) and not hasattr(next(iter(alex.by_chemsys.values()))[0], "structure")
    q = [PDEntry(Composition("Li2O"), -14.0), PDEntry(Composition("NaCl"), -7.0)]
    np.testing.assert_allclose(alex.e_above_hull(q)[0], mp_bundled.e_above_hull(q)[0], atol=1e-9)
    alex.to_parquet(tmp_path / "ref.parquet")
    back = load_reference(tmp_path / "ref.parquet")
    np.testing.assert_allclose(back.e_above_hull(q)[0], mp_bundled.e_above_hull(q)[0], atol=1e-6)


def test_bad_reference_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        load_reference(tmp_path / "nowhere.json")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="formation_energy_per_atom"):
        load_reference(bad)


def test_already_corrected_energies_skip_mp2020(mp20_rows, mp_bundled, calc_compounds):
    """apply_mp2020=False places MP2020-corrected energies (e.g. CHGNet's) without correcting twice."""
    from crystalrl.hull import e_above_hull

    by_id = {d["entry_id"]: d for d in calc_compounds.values()}
    rows = mp20_rows[mp20_rows["material_id"].isin(by_id)]
    structures = [Structure.from_str(c, fmt="cif") for c in rows["cif"]]
    corrected = [mp2020_entry(s, ComputedEntry.from_dict(by_id[m]).uncorrected_energy_per_atom * len(s)).energy
                 for m, s in zip(rows["material_id"], structures)]
    eh, _ = mp_bundled.e_above_hull((structures, corrected), apply_mp2020=False)
    np.testing.assert_allclose(eh, 0.0, atol=1e-6)
    twice, _ = mp_bundled.e_above_hull((structures, corrected))
    assert np.all(twice < -0.1)  # correcting again would sink them below the hull
    marked = type("CorrectedMLIP", (), {"mp2020_corrected": True})()
    np.testing.assert_allclose(e_above_hull(mp_bundled, structures, corrected, mlip=marked)[0], 0.0, atol=1e-6)


def test_alexandria_config_runs_on_the_files_it_names(shared_data, repo_root, monkeypatch):
    """config/alexandria.yaml over config.yaml is valid, every file it names exists (paths from
    the repository root, where snakemake runs) and its hull is the MP hull tested above."""
    from snakemake.utils import update_config

    from crystalrl.checks import check_config as check_workflow_config
    from crystalrl.config import validate_config

    if not (repo_root.parent / "shared" / "data").exists():
        pytest.skip("config/alexandria.yaml names ../shared/data, which is not beside this checkout")
    cfg: dict = {}
    for name in ("config.yaml", "alexandria.yaml"):
        update_config(cfg, yaml.safe_load((repo_root / "config" / name).read_text()))
    cfg = validate_config(cfg)
    monkeypatch.chdir(repo_root)
    assert check_workflow_config(cfg) == []
    mp = mp_hull_section(shared_data)
    assert cfg["hull"]["format"] == mp["format"]
    for key in ("reference", "elemental_entries"):
        assert (repo_root / cfg["hull"][key]).resolve() == Path(mp[key]).resolve(), key
    # the algorithm comparison of docs/rl.md, an overlay on it (bench/bench_algorithms.py)
    update_config(cfg, yaml.safe_load((repo_root / "config" / "compare.yaml").read_text()))
    cfg = validate_config(cfg)
    assert check_workflow_config(cfg) == []
    from crystalrl.config import ppo_run_config

    runs = [ppo_run_config(cfg, name) for name in cfg["ppo"]["runs"]]
    assert sorted((r["algorithm"], r["dpo_gamma"], r["seed"]) for r in runs) == [
        (a, g, s) for a, g in (("dpo", 0.0), ("dpo", 0.1), ("grpo", 0.0), ("ipo", 0.0), ("ppo", 0.0)) for s in (0, 1)]


def test_large_chemical_systems_use_the_linear_program(mp_hull):
    """Above MAX_PD_ELEMENTS the hull energy is a linear program: equal to the PhaseDiagram's
    where both can be built, and seconds where a PhaseDiagram takes hours (a 12-element
    sample stalled PPO of the real-data run for over 10 minutes in one step)."""
    import time

    from pymatgen.core import Element

    from crystalrl.hull import MAX_PD_ELEMENTS, LinearHull

    rng = np.random.default_rng(0)
    for key in [("Fe", "Li", "O", "P"), ("Fe", "Li", "Mn", "Na", "O", "P"), ("Co", "Fe", "Li", "Mg", "Mn", "O", "P", "S")]:
        entries, elements = mp_hull.entries_for(key), [Element(el) for el in key]
        pd_, lp = PhaseDiagram(entries, elements=elements), LinearHull(entries, elements)
        queries = [PDEntry(e.composition, e.energy + rng.normal(0, 0.2) * e.composition.num_atoms) for e in entries[::5]]
        want = [pd_.get_decomp_and_e_above_hull(q, allow_negative=True, check_stable=False)[1] for q in queries]
        np.testing.assert_allclose([lp.e_above_hull(q) for q in queries], want, atol=1e-9)
        assert any(w > 0.05 for w in want) and any(w < -0.05 for w in want)  # above and below the hull

    big = ("Cd", "Hg", "Ho", "Ir", "La", "Nd", "Pb", "Pm", "Se", "Sn", "Tb", "Zn")
    assert len(big) > MAX_PD_ELEMENTS
    t = time.perf_counter()
    e_hull, status = mp_hull.e_above_hull([PDEntry(Composition({el: 1 for el in big}), 0.0)])
    assert time.perf_counter() - t < 10 and status == ["ok"] and np.isfinite(e_hull).all()
    assert isinstance(mp_hull.phase_diagram(big), LinearHull)
    assert isinstance(mp_hull.phase_diagram(big[:MAX_PD_ELEMENTS]), PhaseDiagram)


def test_alexandria_layout_through_prepare_hull_and_the_lazy_table(tmp_path, mp_bundled):
    """Issue 25: the file in the layout of convex_hull_pbe_2023.12.29.json.bz2, {"entries":
    [ComputedStructureEntry.as_dict(), ...]} written with pymatgen's own serialisation, goes
    through the `prepare_hull` stage; the table it writes loads by chemical system on demand
    and places structures exactly as the json.bz2 itself."""
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from crystalrl.stages import run_stage
    rng = np.random.default_rng(0)
    entries = []
    for k, v in mp_bundled.by_chemsys.items():
        for e in v:
            species = [el.symbol for el, n in e.composition.items() for _ in range(int(n))]
            s = Structure(Lattice.cubic(3.0 * len(species) ** (1 / 3)), species, rng.random((len(species), 3)))
            entries.append(ComputedStructureEntry(s, float(e.energy), parameters={"run_type": "GGA"},
                                                  data={"mat_id": f"agm{len(entries):09d}", "e_above_hull": 0.0},
                                                  entry_id=f"agm{len(entries):09d}").as_dict())
    path = tmp_path / "convex_hull_pbe_2023.12.29.json.bz2"
    with bz2.open(path, "wt") as fh:
        json.dump({"entries": entries}, fh)
    table = tmp_path / "hull" / "reference.parquet"
    run_stage("prepare_hull", dict(source=str(path)), dict(table=str(table)),
              dict(hull={"reference": "alexandria", "path": str(path)}), log=tmp_path / "prepare.log")
    direct, lazy = load_reference(path), load_reference(table)
    assert len(lazy) == len(direct) == len(entries) and lazy.elements == direct.elements
    assert not lazy.by_chemsys._built  # nothing built at load
    q = [PDEntry(Composition(f), en) for f, en in (("Li2O", -14.0), ("NaCl", -7.0), ("Fe2O3", -38.0),
                                                    ("LiFeO2", -25.0), ("Og", 0.0))]
    a, sa = direct.e_above_hull(q)
    b, sb = lazy.e_above_hull(q)
    np.testing.assert_allclose(b, a, atol=1e-9)
    assert sa == sb and "missing reference for elements: Og" in sb[-1]
    assert 0 < len(lazy.by_chemsys._built) < len(lazy.by_chemsys)  # only the systems asked for
