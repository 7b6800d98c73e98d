"""Relaxation on real structures: batched (TorchSim) agrees with per-structure ASE; broken
structures and explosions fail alone; the relax stages as the workflow runs them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crystalrl.config import ConfigError
from crystalrl.mlip import MLIPConfig, load_mlip
from crystalrl.relax import Guards, RelaxConfig, chunk_rows, relax_samples, relax_structures
from test_mlip import load_alexandria


@pytest.fixture(scope="module")
def chgnet():
    torch.set_num_threads(1)
    return load_mlip(MLIPConfig.from_dict({"backend": "chgnet", "device": "cpu"}))


def relax_cfg(**kw) -> RelaxConfig:
    return RelaxConfig.from_dict({"fmax": 0.1, "max_steps": 50, **kw})


def rattled(structures, stdev=0.1) -> list[Structure]:
    out = []
    for k, s in enumerate(structures):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.rattle(stdev=stdev, seed=k)
        out.append(AseAtomsAdaptor.get_structure(atoms))
    return out


def broken(s: Structure) -> Structure:
    """Two atoms 0.1 Å apart."""
    b = s.copy()
    b.append(b.species[0], b.sites[0].coords + np.array([0.1, 0, 0]), coords_are_cartesian=True)
    return b


@pytest.fixture(scope="module")
def six_rattled(shared_data):
    return rattled(load_alexandria(shared_data, 6, max_sites=6, seed=4))


def test_batched_agrees_with_ase_via_user_calculator(chgnet, six_rattled):
    """TorchSim's batched FIRE (batches of 4, refilled as structures finish) and ASE FIRE one
    structure at a time, here through a user's `module:factory` calculator (CHGNet's own ASE
    calculator), relax 6 rattled Alexandria structures to the same energies in as many steps."""
    batched = relax_structures(chgnet, six_rattled, relax_cfg(method="batched", batch_size=4))
    user = load_mlip(MLIPConfig.from_dict({"backend": "user_calculators:chgnet_calculator",
                                           "mp2020_corrected": True}))
    ase = relax_structures(user, six_rattled, relax_cfg(method="auto"))
    assert (batched["method"] == "batched").all() and (ase["method"] == "ase").all()
    assert (batched["status"] == "ok").all() and (ase["status"] == "ok").all()
    assert batched["converged"].sum() >= 4 and ase["converged"].sum() >= 4
    assert (batched["energy_final"] < batched["energy_initial"] - 1e-3).sum() >= 5  # real relaxation
    np.testing.assert_allclose(batched["energy_initial"], ase["energy_initial"], atol=1e-4)
    # FIRE paths part where float32 forces differ in the last digits: the same minimum, near enough
    d = np.abs(batched["energy_final"] - ase["energy_final"])
    assert np.median(d) < 1e-3 and d.max() < 1e-2, d.to_numpy()
    # refills do not disturb the structures already relaxing (TorchSim 0.3.0's NaN-velocity quirk)
    assert np.abs(batched["steps"] - ase["steps"]).max() <= 2, (batched["steps"], ase["steps"])
    # the relaxed CIF is the relaxed structure: the MLIP gives its final energy back
    s = Structure.from_str(batched["cif_relaxed"].iloc[0], fmt="cif")
    assert chgnet.energies([s])[0] / len(s) == pytest.approx(batched["energy_final"].iloc[0], abs=1e-4)
    with pytest.raises(ConfigError, match="'relax.method'.*one structure at a time"):
        relax_structures(user, six_rattled[:1], relax_cfg(method="batched"))


@pytest.mark.parametrize("method", ["batched", "ase"])
def test_explosions_and_long_runs_are_marked_not_fatal(chgnet, shared_data, method):
    """A guard tripping mid-run (here: any volume change) fails that structure only; a structure
    out of steps stays 'ok' with converged False; overlapping atoms fail before the MLIP."""
    s = load_alexandria(shared_data, 3, max_sites=4, seed=5)
    strained = s[0].copy()
    strained.scale_lattice(strained.volume * 1.3)  # must shrink back, so the volume changes
    strict = Guards(max_volume_ratio=1.0005)
    df = relax_structures(chgnet, [strained, broken(s[1]), s[1]], relax_cfg(method=method, max_steps=5),
                          guards=strict)
    assert df.loc[0, "status"].startswith("failed: volume changed by a factor")
    assert df.loc[0, "steps"] >= 1 and np.isnan(df.loc[0, "energy_final"])
    assert np.isfinite(df.loc[0, "energy_initial"])
    assert df.loc[1, "status"].startswith("failed: atoms closer than 0.5")
    assert df.loc[2, "steps"] >= 1 or df.loc[2, "converged"]  # the others still ran
    long = relax_structures(chgnet, [strained, s[2]], relax_cfg(method=method, fmax=1e-4, max_steps=3))
    assert (long["status"] == "ok").all() and not long["converged"].any()
    assert (long["steps"] == 3).all() and np.isfinite(long["energy_final"]).all()


def test_failing_batch_falls_back_to_one_by_one(chgnet, shared_data, monkeypatch):
    """A model call that raises for a whole batch (one pathological graph) does not stop the
    chunk: that batch's structures are relaxed one at a time with ASE."""
    s = load_alexandria(shared_data, 2, max_sites=4, seed=5)
    real = chgnet.forward

    def flaky(graphs, properties=("energy", "forces", "stress")):
        if "stress" in properties and len(graphs) > 1:
            raise RuntimeError("out of memory")
        return real(graphs, properties)

    monkeypatch.setattr(chgnet, "forward", flaky)
    df = relax_structures(chgnet, s, relax_cfg(method="batched", max_steps=5))
    assert (df["status"] == "ok").all() and (df["method"] == "ase").all() and (df["steps"] >= 1).all()


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
    df = relax_samples(samples, chgnet, load_reference("mp_bundled"), relax_cfg(max_steps=20))
    assert df["sample_id"].tolist() == ["a", "bad", "b", "none"]
    assert df.loc[1, "status"].startswith("failed: CIF does not parse")
    assert df.loc[3, "status"] == "failed: no CIF (sample was not decoded)"
    good = df.loc[[0, 2]]
    assert (good["status"] == "ok").all() and (good["hull_status"] == "ok").all()
    # CHGNet (trained on MP) puts these MP ground states near the MP hull
    assert np.all(np.abs(good["e_hull_final"]) < 0.05)
    assert np.all(good["e_hull_final"] <= good["e_hull_initial"] + 1e-4)
    assert np.isnan(df.loc[[1, 3], "e_hull_initial"]).all()


def test_relax_config_is_strict():
    import dataclasses

    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(RelaxConfig))
    assert RelaxConfig.schema_keys() == {f.name for f in dataclasses.fields(RelaxConfig)}
    assert RelaxConfig.from_dict({}).method == "auto"  # the schema's default
    with pytest.raises(ConfigError, match="'relax.method'"):
        RelaxConfig.from_dict({"method": "fast"})
    from crystalrl.relax import check_config

    assert check_config({"method": "batched"}, {"backend": "chgnet"}) == []
    assert check_config({"method": "auto"}, {"backend": "user_calculators:chgnet_calculator"}) == []
    assert check_config({"method": "batched"}, {"backend": "user_calculators:chgnet_calculator"})[0].startswith(
        "config key 'relax.method': batched relaxation needs a batched backend")
    assert check_config({"method": "batched", "fix_symmetry": True}, {"backend": "chgnet"})[0].startswith(
        "config key 'relax.method': fix_symmetry")
    assert check_config({"fmax": -1}, {})[0].startswith("config key 'relax.fmax'")


def test_chunks_cover_rows_in_order():
    parts = [chunk_rows(10, c, 3) for c in range(3)]
    assert np.concatenate(parts).tolist() == list(range(10))
    with pytest.raises(ValueError):
        chunk_rows(10, 3, 3)


def test_relax_stages(chgnet, shared_data, tmp_path):
    """Stages `relax` (2 chunks) and `merge_relax` as the rules run them, with the params the rules pass."""
    from crystalrl.stages import run_stage

    s = load_alexandria(shared_data, 3, max_sites=4, seed=7)
    samples = pd.DataFrame({"sample_id": [10, 11, 12], "cif": [x.to(fmt="cif") for x in s]})
    samples.to_parquet(tmp_path / "samples.parquet")
    params = {"relax": {"fmax": 0.2, "max_steps": 5, "n_chunks": 2},
              "mlip": {"backend": "chgnet", "device": "cpu", "batch_size": 8},
              "hull": {"reference": "mp_bundled"}}
    chunks = [str(tmp_path / f"chunk_{c}.parquet") for c in range(2)]
    for c in range(2):
        run_stage("relax", {"samples": str(tmp_path / "samples.parquet"), "hull": []}, {"chunk": chunks[c]},
                  {**params, "chunk": c}, log=tmp_path / f"relax_{c}.log")
    run_stage("merge_relax", {"chunks": chunks}, {"relaxed": str(tmp_path / "relaxed.parquet")}, {},
              log=tmp_path / "merge.log")
    df = pd.read_parquet(tmp_path / "relaxed.parquet")
    assert df["sample_id"].tolist() == [10, 11, 12]
    assert (df["method"] == "batched").all() and np.isfinite(df["energy_initial"]).all()
    for col in ["energy_initial", "energy_final", "e_hull_initial", "e_hull_final", "cif_relaxed",
                "converged", "steps", "status", "hull_status", "seconds"]:
        assert col in df
    assert "batched relaxation" in (tmp_path / "relax_0.log").read_text()


def test_memoized_expm_frechet_equals_torchsim(monkeypatch):
    """One block-matrix exponential per A answers TorchSim's 9 direction calls, to rounding."""
    import torch_sim.math as tsm

    import crystalrl.relax.frechet as fr

    computed = []
    units = fr.expm_frechet_units
    monkeypatch.setattr(fr, "expm_frechet_units", lambda a: computed.append(1) or units(a))
    original = tsm.expm_frechet
    gen = torch.Generator().manual_seed(0)
    a_k33 = 0.2 * torch.randn(3, 3, 3, dtype=torch.float64, generator=gen)  # log deformation gradients
    e_k33 = [*torch.eye(9, dtype=torch.float64).reshape(9, 3, 3), torch.randn(3, 3, dtype=torch.float64, generator=gen)]
    with fr.memoized_expm_frechet():
        assert tsm.expm_frechet is not original
        for k, a in enumerate(a_k33):
            for e in e_k33:
                got = tsm.expm_frechet(a, e, compute_expm=False)
                torch.testing.assert_close(got, original(a, e, compute_expm=False), rtol=0, atol=1e-12)
            assert len(computed) == k + 1  # 10 directions, one matrix exponential
        expm_a, _ = tsm.expm_frechet(a_k33[0], e_k33[0])  # asks for expm(A) too: TorchSim's own
        torch.testing.assert_close(expm_a, torch.linalg.matrix_exp(a_k33[0]))
    assert tsm.expm_frechet is original


def test_memoized_expm_frechet_gives_torchsim_cell_forces():
    """A TorchSim Frechet-FIRE step on strained, rattled argon gives the same cell forces with it."""
    import torch_sim as ts
    from ase.build import bulk
    from torch_sim.models.lennard_jones import LennardJonesModel

    from crystalrl.relax.frechet import memoized_expm_frechet

    model = LennardJonesModel(sigma=3.405, epsilon=0.0104, cutoff=8.0, device=torch.device("cpu"),
                              dtype=torch.float64, compute_forces=True, compute_stress=True)
    atoms_list = []
    for k, strain in enumerate((0.97, 1.0, 1.04)):
        atoms = bulk("Ar", "fcc", a=5.26 * strain, cubic=True)
        atoms.rattle(0.05, seed=k)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.02 * k * np.ones((3, 3))), scale_atoms=True)
        atoms_list.append(atoms)
    init_fn, step_fn = ts.frechet_cell_fire(model, md_flavor="ase_fire")
    out = []
    for memo in (False, True):
        state = init_fn(ts.initialize_state(atoms_list, model.device, model.dtype))
        for _ in range(3):
            if memo:
                with memoized_expm_frechet():
                    state = step_fn(state)
            else:
                state = step_fn(state)
        out.append(state)
    assert out[0].cell_forces.abs().max() > 1e-4  # the cell really moves
    torch.testing.assert_close(out[1].cell_forces, out[0].cell_forces, rtol=0, atol=1e-10)
    torch.testing.assert_close(out[1].positions, out[0].positions, rtol=0, atol=1e-10)
