"""MLIP backends on real Alexandria structures: batched == per-structure ASE, faster, NaN-safe."""
from __future__ import annotations

import tarfile
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crystalrl.mlip import get_mlip


def load_alexandria(shared_data, n: int, max_sites: int = 12, seed: int = 0) -> list[Structure]:
    """`n` real Alexandria structures with at most `max_sites` sites (seeded pick)."""
    root = shared_data / "alexandria_sample"
    idx = pd.read_csv(root / "index.csv")
    idx = idx[idx["nsites"] <= max_sites].sample(n=n, random_state=seed)
    want = set(idx["file"])
    out = {}
    with tarfile.open(root / "cifs.tar.gz") as tar:
        for m in tar:
            name = m.name.split("/")[-1]
            if name in want:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out[name] = Structure.from_str(tar.extractfile(m).read().decode(), fmt="cif")
    return [out[f] for f in idx["file"]]


def ase_energies(calc, structures) -> np.ndarray:
    """The baseline: one ASE calculator call per structure (as the public RL code does)."""
    out = []
    for s in structures:
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calc
        out.append(atoms.get_potential_energy())
    return np.array(out)


@pytest.fixture(scope="module")
def chgnet():
    torch.set_num_threads(1)
    return get_mlip("chgnet")


@pytest.fixture(scope="module")
def structures(shared_data):
    return load_alexandria(shared_data, 24)


def test_get_mlip_caches_and_rejects_unknown(chgnet):
    assert get_mlip("chgnet") is chgnet
    assert get_mlip("CHGNet", device="cpu") is chgnet
    with pytest.raises(ValueError, match="unknown MLIP backend 'mace'"):
        get_mlip("mace")


def test_chgnet_batched_equals_ase_and_is_faster(chgnet, structures):
    calc = chgnet.calculator()
    chgnet.energies(structures[:2])  # warm-up both paths
    ase_energies(calc, structures[:2])
    t0 = time.perf_counter()
    e_batch = chgnet.energies(structures, batch_size=32)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    e_ase = ase_energies(calc, structures)
    t_ase = time.perf_counter() - t0
    n = np.array([len(s) for s in structures])
    np.testing.assert_allclose(e_batch / n, e_ase / n, atol=1e-5, rtol=0)
    assert np.all(e_batch / n < 0) and np.all(e_batch / n > -15)  # real solids, real model
    assert t_ase / t_batch >= 2.0, f"batched {t_batch:.2f} s vs ASE loop {t_ase:.2f} s"


def test_chgnet_forces_stress_match_calculator(chgnet, structures):
    some = structures[:4]
    pred = chgnet.predict(some, batch_size=3)
    assert pred["energy"].shape == (4,) and pred["stress"].shape == (4, 3, 3)
    calc = chgnet.calculator()
    for i, s in enumerate(some):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calc
        assert pred["forces"][i].shape == (len(s), 3)
        np.testing.assert_allclose(pred["forces"][i], atoms.get_forces(), atol=1e-4)
        np.testing.assert_allclose(pred["stress"][i], atoms.get_stress(voigt=False), atol=1e-5)
    assert np.abs(np.concatenate(pred["forces"])).max() > 1e-3  # real, non-zero forces


def test_bad_structures_get_nan_not_a_crash(chgnet, structures):
    s0, s1 = structures[0], structures[1]
    nan_s = s1.copy()
    nan_s.lattice = Lattice(np.full((3, 3), np.nan))
    # 1.7 Å^3/atom with atoms 1.2 Å apart: structurally "valid", but its graph would hold
    # ~300 neighbours per atom (such samples took a batch past 24 GB)
    dense = Structure(Lattice.cubic(1.2), ["Si"], [[0, 0, 0]])
    batch = [s0, None, nan_s, Structure(Lattice.cubic(3.0), [], []), dense, s1]
    pred = chgnet.predict(batch)
    good = chgnet.predict([s0, s1])
    np.testing.assert_allclose(pred["energy"][[0, 5]], good["energy"], atol=1e-5)
    assert np.isnan(pred["energy"][1:5]).all()
    assert pred["error"][1] == "no structure" and "non-finite" in pred["error"][2]
    assert "denser than any solid" in pred["error"][4]
    assert pred["error"][0] is None and np.isnan(pred["stress"][2]).all()


@pytest.fixture(scope="module")
def orb_weights(tmp_path_factory):
    """Random Orb v2 / v3 weights saved to files: the real loading path, no download."""
    from orb_models.forcefield import pretrained
    from orb_models.forcefield.atomic_system import SystemConfig

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("orb")
    v2 = pretrained.orb_v2_architecture(system_config=SystemConfig(radius=6.0, max_num_neighbors=20))
    torch.save(v2.state_dict(), d / "orb-v2-random.ckpt")
    v3 = pretrained.orb_v3_conservative_architecture(
        system_config=SystemConfig(radius=6.0, max_num_neighbors=120))
    torch.save(v3.state_dict(), d / "orb-v3-random.ckpt")
    return {"orb-v2": d / "orb-v2-random.ckpt", "orb-v3-conservative-inf-mpa": d / "orb-v3-random.ckpt"}


@pytest.mark.parametrize("model,n", [("orb-v2", 5), ("orb-v3-conservative-inf-mpa", 2)])
def test_orb_from_local_weights(orb_weights, shared_data, model, n):
    torch.set_num_threads(1)
    mlip = get_mlip("orb", model=model, weights_path=orb_weights[model])
    some = load_alexandria(shared_data, n, max_sites=8, seed=1)
    pred = mlip.predict(some, batch_size=n)
    assert pred["energy"].shape == (n,) and np.isfinite(pred["energy"]).all()
    assert [f.shape for f in pred["forces"]] == [(len(s), 3) for s in some]
    assert np.isfinite(pred["stress"]).all() and pred["error"] == [None] * n
    single = np.array([mlip.predict([s])["energy"][0] for s in some])
    nat = np.array([len(s) for s in some])
    np.testing.assert_allclose(pred["energy"] / nat, single / nat, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ase_energies(mlip.calculator(), some[:1]), pred["energy"][:1], atol=1e-4)
    # the file's weights are what got loaded (every tensor), and the load is cached
    saved = torch.load(orb_weights[model], weights_only=True)
    loaded = mlip.model.state_dict()
    assert all(torch.equal(loaded[k].cpu(), v) for k, v in saved.items())
    assert mlip is get_mlip("orb", model=model, weights_path=str(orb_weights[model]))


def test_orb_unknown_model_is_clear():
    with pytest.raises(ValueError, match="unknown Orb model 'orb-v9'"):
        get_mlip("orb", model="orb-v9", weights_path="/nonexistent.ckpt")
