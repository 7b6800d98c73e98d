"""Issue 26: stability after relaxation (LeMat-GenBench's SUN / MSUN) and the second-MLIP cross-check,
on real MP structures with the demo's MLIP (CHGNet on the CPU), and the config keys as Snakemake sees them."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crystalrl.evaluate.relaxed import (RELAX_COLUMNS, check_agreement, cross_check, relax_and_score, relax_config,
                                        rmsd, sun_relaxed)
from crystalrl.evaluate.sun import EvaluateConfig
from crystalrl.structures import parse_many


@pytest.fixture(scope="module")
def chgnet():
    from crystalrl.mlip import MLIPConfig, load_mlip

    torch.set_num_threads(1)
    return load_mlip(MLIPConfig.from_dict({"backend": "chgnet", "device": "cpu"}))


@pytest.fixture(scope="module")
def hull():
    from crystalrl.hull import load_reference

    return load_reference("mp_bundled")


@pytest.fixture(scope="module")
def mp_structures(shared_data):
    """MP's NaCl and GaTe (ground states, on the MP hull), each rattled 0.05 Å so relaxation has work to do."""
    rows = pd.read_csv(shared_data / "mp20" / "mp20_rows.csv")
    pick = rows[rows["pretty_formula"].isin(["NaCl", "GaTe"])].drop_duplicates("pretty_formula")
    structures, _ = parse_many(pick["cif"].tolist())
    out = []
    for k, s in enumerate(structures):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.rattle(stdev=0.05, seed=k)
        out.append(AseAtomsAdaptor.get_structure(atoms))
    return out


def test_relaxed_e_hull_and_rmsd_on_real_structures_and_a_collapsed_one(chgnet, hull, mp_structures):
    from crystalrl.ehull import e_hull_as_generated

    collapsed = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.02, 0, 0]])  # 0.08 Å apart
    structures = [mp_structures[0], collapsed, None, mp_structures[1], mp_structures[0]]
    todo = [True, True, False, True, False]  # the last: not asked for (e.g. invalid)
    cfg = relax_config(EvaluateConfig.from_dict({"relax": {"max_steps": 100}}).relax)
    df = relax_and_score(structures, todo, chgnet, hull, cfg, {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0})
    assert list(df.columns) == RELAX_COLUMNS and len(df) == 5

    ok = df.loc[[0, 3]]
    generated, _ = e_hull_as_generated([structures[0], structures[3]], chgnet, hull)
    # relaxing lowers the energy; CHGNet (trained on MP) puts the relaxed MP ground states near the MP hull
    assert np.all(ok["e_hull_relaxed"].to_numpy() <= generated + 1e-4)
    assert np.all(np.abs(ok["e_hull_relaxed"]) < 0.05)
    assert ok["relax_converged"].all() and (ok["relax_reason"] == "").all()
    # a 0.05 Å rattle relaxes back: a small, nonzero displacement of a matching structure
    assert np.all((ok["rmsd_relax"] > 0) & (ok["rmsd_relax"] < 0.1))
    relaxed, why = parse_many(ok["cif_relaxed"].tolist())
    assert not any(why) and [s.composition for s in relaxed] == [structures[0].composition,
                                                                 structures[3].composition]

    # the collapsed structure keeps its row, NaN, with the reason; rows not asked for stay empty
    assert np.isnan(df.loc[1, "e_hull_relaxed"]) and np.isnan(df.loc[1, "rmsd_relax"])
    assert df.loc[1, "relax_reason"].startswith("relaxation failed: atoms closer than")
    assert not df.loc[1, "relax_converged"] and df.loc[1, "cif_relaxed"] is None
    for i in (2, 4):
        assert np.isnan(df.loc[i, "e_hull_relaxed"]) and df.loc[i, "relax_reason"] == ""


def test_rmsd_is_nan_where_structures_no_longer_match():
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert rmsd(nacl, nacl.copy()) == pytest.approx(0.0, abs=1e-8)
    squashed = nacl.copy()
    squashed.apply_strain([0.6, 0.0, 0.0])  # 60% longer along a: beyond ltol
    assert np.isnan(rmsd(nacl, squashed)) and np.isnan(rmsd(nacl, None))


def test_sun_at_zero_and_msun_up_to_a_tenth_are_disjoint():
    e_n = np.array([-0.05, 0.0, 0.05, 0.1, 0.15, np.nan, -0.2, -0.2])
    flags = pd.DataFrame({"valid": [True] * 6 + [False, True], "unique": True,
                          "novel": [True] * 7 + [False]})
    sun, msun = sun_relaxed(flags, e_n, 0.0, 0.1)
    assert sun.tolist() == [True, True, False, False, False, False, False, False]
    assert msun.tolist() == [False, False, True, True, False, False, False, False]
    cfg = EvaluateConfig.from_dict({})
    assert (cfg.sun_threshold, cfg.msun_threshold) == (0.0, 0.1)  # LeMat-GenBench's, from the schema


class Shifted:
    """A second 'MLIP': the first one, its energies raised by `shift` eV/atom for one formula."""

    def __init__(self, mlip, formula: str, shift: float):
        self.mlip, self.formula, self.shift = mlip, formula, shift

    def __getattr__(self, name):
        return getattr(self.mlip, name)

    def predict(self, structures, properties=("energy",)):
        pred = self.mlip.predict(structures, properties=properties)
        pred["energy"] = np.array([e + self.shift * len(s) if s is not None and
                                   s.composition.reduced_formula == self.formula else e
                                   for e, s in zip(pred["energy"], structures)])
        return pred


def test_cross_check_scores_the_stable_rows_and_flags_disagreement(chgnet, hull, mp_structures):
    from crystalrl.ehull import e_hull_as_generated

    structures = mp_structures + [Structure(Lattice.cubic(3.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])]
    e_hull, _ = e_hull_as_generated(structures, chgnet, hull)
    assert e_hull[0] < 0.1 and e_hull[1] < 0.1 and e_hull[2] > 0.1  # CsCl-type NaCl squeezed: far above
    e_relaxed = np.array([np.nan, e_hull[1] - 0.01, np.nan])  # GaTe judged on its "relaxed" structure
    relaxed = [None, structures[1], None]
    same = cross_check(structures, relaxed, e_hull, e_relaxed, chgnet, hull, stable_threshold=0.1, tolerance=0.1)
    # the same MLIP re-scores the stable rows exactly; the unstable row is not scored
    assert same["e_hull_check"][:2].to_numpy() == pytest.approx(e_hull[:2], abs=1e-6)
    assert np.isnan(same["e_hull_check"][2])
    assert same["check_agrees"].tolist() == [True, True, False] and not same["check_flag"].any()

    other = Shifted(chgnet, "GaTe", 0.3)  # a second MLIP that puts GaTe 0.3 eV/atom higher
    check = cross_check(structures, relaxed, e_hull, e_relaxed, other, hull, stable_threshold=0.1, tolerance=0.1)
    assert check["e_hull_check"][1] == pytest.approx(e_hull[1] + 0.3, abs=1e-4)
    assert check["check_agrees"].tolist() == [True, False, False]
    assert check["check_flag"].tolist() == [False, True, False]
    n, agree, flagged = check_agreement(check)
    assert (n, agree, flagged) == (2, 0.5, 1)


def _dry_run(tmp_path, extra: str) -> subprocess.CompletedProcess:
    from test_workflow import make_workdir

    tmp_path.mkdir(parents=True, exist_ok=True)
    wd = make_workdir(tmp_path, {})
    (wd / "extra.yaml").write_text(extra)
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile",
                           "config/demo.yaml", "extra.yaml"], cwd=wd, capture_output=True, text=True, timeout=300)


def test_dry_run_names_a_misspelled_strict_key(tmp_path):
    proc = _dry_run(tmp_path, "evaluate:\n  strict:\n    radius_scal: 0.4\n")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key 'evaluate.strict.radius_scal': unknown key (did you mean 'radius_scale'?)" in out


def test_dry_run_names_a_bad_cross_check_mlip_and_plans_its_weights(tmp_path):
    proc = _dry_run(tmp_path / "bad", "evaluate:\n  cross_check_mlip: {backend: sevenet}\n")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config key 'evaluate.cross_check_mlip.backend'" in out and "sevennet" in out
    # a second MLIP whose weights are downloaded: fetched once by a local rule, an input of every evaluate job
    proc = _dry_run(tmp_path / "orb", "evaluate:\n  cross_check_mlip: {backend: orb, model: orb-v2}\n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "rule fetch_cross_check_weights" in out and "resources/mlip/orb-orb-v2.weights" in out


def test_relaxation_starts_from_the_energies_evaluation_already_has(chgnet, hull, mp_structures):
    """The evaluate stage scored every relaxed row as generated: the relaxation takes those energies
    instead of a second single-point pass, and relaxes to the same place."""
    from crystalrl.ehull import energy_and_e_hull_as_generated
    from crystalrl.relax import RelaxConfig, relax_structures

    calls = []

    class Counting:
        """The CHGNet wrapper, counting its single-point passes."""

        def __getattr__(self, name):
            return getattr(chgnet, name)

        def predict(self, structures, *a, **kw):
            calls.append(sum(s is not None for s in structures))
            return chgnet.predict(structures, *a, **kw)

    energy, e_hull, _ = energy_and_e_hull_as_generated(mp_structures, chgnet, hull)
    assert np.all(np.isfinite(energy)) and np.all(np.isfinite(e_hull))
    cfg = RelaxConfig.from_dict({"fmax": 0.1, "max_steps": 20, "method": "ase"})
    counted = Counting()
    fresh = relax_structures(counted, mp_structures, cfg)
    assert calls == [2]
    calls.clear()
    known = relax_structures(counted, mp_structures, cfg, energy_initial=energy)
    assert calls == []
    n_atoms = np.array([len(s) for s in mp_structures])
    np.testing.assert_allclose(known["energy_initial"], energy / n_atoms)
    np.testing.assert_allclose(known["energy_initial"], fresh["energy_initial"], rtol=1e-6)
    np.testing.assert_allclose(known["energy_final"], fresh["energy_final"], rtol=1e-6)
    # a NaN energy still asks the MLIP, for that structure only
    relax_structures(counted, mp_structures, cfg, energy_initial=[energy[0], np.nan])
    assert calls == [1]
