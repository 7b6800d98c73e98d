"""Dielectric models: DFPT data cleaning, training on the real set, FoM on real structures."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure

from crystalrl.dielectric import (DielectricPredictor, eps_from_voigt, load_dielectric_dataset,
                                  merged_config)
from crystalrl.dielectric.fit import fit, fold_scaling, predict_graphs
from crystalrl.dielectric.graphs import convert_many

ELEMENTS = ("H", "Li", "O", "F", "Na", "Cl")



@pytest.fixture(scope="module")
def dfpt_path(shared_data) -> Path:
    return shared_data / "mp_dielectric" / "dielectric_constant.json.gz"


@pytest.fixture(scope="module")
def dfpt(dfpt_path):
    return load_dielectric_dataset(dfpt_path)


def _rocksalt(a=5.64):
    """Primitive rock-salt NaCl (2 atoms) with cubic lattice constant `a`."""
    fcc = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    return Structure(fcc, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


# ---------------------------------------------------------------- data

def test_dataset_cleaning_and_targets(dfpt, dfpt_path):
    raw = pd.read_json(dfpt_path, orient="split")
    assert len(dfpt) + len(dfpt.rejected) == len(raw) == 1056
    # the 15 rows with a total component > 100 are the only ones dropped, each with its reason
    assert len(dfpt.rejected) == 15
    assert dfpt.rejected["reason"].str.contains(r"row \d+ \(mp-\d+\): `e_total` component outside").all()
    assert dfpt.voigt_n6.shape == (len(dfpt), 6) and np.abs(dfpt.voigt_n6).max() <= 100
    # scalar = mean of eigenvalues; MP's own `poly_total` (2 decimals) is exactly that
    poly = raw.set_index("material_id").loc[dfpt.ids, "poly_total"].to_numpy()
    assert np.abs(dfpt.eps_n - poly).max() < 0.01
    # Voigt order xx yy zz yz xz xy of the symmetrised tensor
    row = raw.set_index("material_id").loc[dfpt.ids[3]]
    t = np.array(json.loads(row["e_total"]))
    t = 0.5 * (t + t.T)
    np.testing.assert_allclose(dfpt.voigt_n6[3], [t[0, 0], t[1, 1], t[2, 2], t[1, 2], t[0, 2], t[0, 1]])
    assert dfpt.structures[3].composition.reduced_formula == Structure.from_dict(row["structure"]).composition.reduced_formula


def test_split_is_seeded_8_1_1(dfpt, dfpt_path):
    sizes = {s: int((dfpt.split_n == s).sum()) for s in ("train", "val", "test")}
    assert sizes == {"train": 833, "val": 104, "test": 104}
    again = load_dielectric_dataset(dfpt_path, seed=0)
    other = load_dielectric_dataset(dfpt_path, seed=1)
    assert (again.split_n == dfpt.split_n).all()
    assert (other.split_n != dfpt.split_n).any()


def test_electronic_target_matches_poly_electronic(dfpt_path):
    ds = load_dielectric_dataset(dfpt_path, target="electronic")
    raw = pd.read_json(dfpt_path, orient="split").set_index("material_id")
    assert np.abs(ds.eps_n - raw.loc[ds.ids, "poly_electronic"].to_numpy()).max() < 0.01
    # a narrower range drops more rows
    assert len(load_dielectric_dataset(dfpt_path, component_range=(-20, 20))) < len(ds)


def test_bad_rows_are_rejected_with_reasons(tmp_path):
    good = _rocksalt().as_dict()
    eye = np.eye(3) * 5.0
    rows = [
        ["mp-1", good, json.dumps(eye.tolist()), 2.0],
        ["mp-2", good, json.dumps([[1, 2], [3, 4]]), 2.0],              # wrong shape
        ["mp-3", {"not": "a structure"}, json.dumps(eye.tolist()), 2.0],  # bad structure
        ["mp-4", good, json.dumps((eye * 50).tolist()), 2.0],             # 250 > 100
        ["mp-5", good, json.dumps((eye * 0.1).tolist()), 2.0],            # diagonal < 1
    ]
    df = pd.DataFrame(rows, columns=["material_id", "structure", "e_total", "band_gap"])
    path = tmp_path / "d.json.gz"
    df.to_json(path, orient="split")
    ds = load_dielectric_dataset(path)
    assert ds.ids == ["mp-1"]
    reasons = dict(zip(ds.rejected["id"], ds.rejected["reason"]))
    assert "shape (2, 2)" in reasons["mp-2"] and "row 1" in reasons["mp-2"]
    assert "mp-3" in reasons and "component_range" in reasons["mp-4"] and "below 1" in reasons["mp-5"]
    with pytest.raises(ValueError, match="target"):
        load_dielectric_dataset(path, target="ionic")


def test_eps_from_voigt_is_mean_eigenvalue():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 3, 3))
    full = a @ a.transpose(0, 2, 1) + 3 * np.eye(3)
    voigt = np.stack([full[:, 0, 0], full[:, 1, 1], full[:, 2, 2], full[:, 1, 2], full[:, 0, 2], full[:, 0, 1]], 1)
    np.testing.assert_allclose(eps_from_voigt(voigt), np.linalg.eigvalsh(full).mean(1))


def test_config_merging_and_typos():
    cfg = merged_config({"enabled": True, "data": "x.json.gz", "epochs": 3, "band_gap_pretrained": "/m",
                         "extra": {"model": {"units": 16}}})
    assert cfg["epochs"] == 3 and cfg["band_gap"]["pretrained_path"] == "/m"
    assert cfg["model"]["units"] == 16 and cfg["model"]["nblocks"] == 2
    with pytest.raises(KeyError, match="epoch"):
        merged_config({"epoch": 3})


# ---------------------------------------------------------------- training pieces

def _tiny_m3gnet(seed=0):
    from matgl.models import M3GNet
    torch.manual_seed(seed)
    return M3GNet(element_types=ELEMENTS, ntargets=6, units=8, dim_node_embedding=8,
                  dim_edge_embedding=8, nblocks=1, cutoff=4.0, threebody_cutoff=3.0)


def test_fold_scaling_makes_outputs_physical():
    graphs, _ = convert_many([_rocksalt(a) for a in (5.4, 5.6, 5.8)], ELEMENTS, 4.0)
    model = _tiny_m3gnet()
    before = predict_graphs(model, graphs)
    mean_k, scale = np.array([10, 11, 12, 0, 0, 0.5]), 7.0
    fold_scaling(model, mean_k, scale)
    np.testing.assert_allclose(predict_graphs(model, graphs), before * scale + mean_k, rtol=1e-5, atol=1e-4)


def test_fit_learns_and_resumes_from_checkpoint(tmp_path):
    # target: a smooth function of the lattice constant, learnable by a tiny model
    a_n = np.linspace(4.8, 6.4, 24)
    graphs, _ = convert_many([_rocksalt(a) for a in a_n], ELEMENTS, 4.0)
    y = np.zeros((24, 6))
    y[:, :3] = (3.0 * (a_n - 4.8))[:, None] + 2.0
    mae = lambda p, t: float(np.abs(p - t).mean())  # noqa: E731
    kw = dict(epochs=20, batch_size=8, lr=3e-2, seed=0, val_metric=mae,
              mean_k=np.array([4.4] * 3 + [0] * 3), scale=1.4, ckpt_path=tmp_path / "c.pt", ckpt_key="k")
    # a run killed after its first epoch (time budget 0 stops it there) ...
    first = fit(_tiny_m3gnet(), (graphs, y), (graphs, y), max_seconds=0.0, **kw)
    assert first.epochs_run == 1 and (tmp_path / "c.pt").exists()
    # ... resumes at epoch 2 with the same history
    second = fit(_tiny_m3gnet(), (graphs, y), (graphs, y), **kw)
    assert second.resumed_from_epoch == 1 and second.epochs_run == 20
    assert second.history[0] == first.history[0]
    # a checkpoint of another config is ignored
    third = fit(_tiny_m3gnet(), (graphs, y), (graphs, y), **{**kw, "ckpt_key": "other", "epochs": 1})
    assert third.resumed_from_epoch == 0
    # an unreadable checkpoint (a truncated write) is set aside, and the run starts afresh
    (tmp_path / "c.pt").write_bytes((tmp_path / "c.pt").read_bytes()[:100])
    fourth = fit(_tiny_m3gnet(), (graphs, y), (graphs, y), **{**kw, "epochs": 1, "ckpt_key": "other"})
    assert fourth.resumed_from_epoch == 0 and (tmp_path / "c.pt.corrupt").exists()
    # it learned something: better than predicting the mean of the targets
    baseline = mae(np.broadcast_to(y.mean(0), y.shape), y)
    assert second.best_val < 0.5 * baseline


# ---------------------------------------------------------------- real training + FoM

@pytest.fixture(scope="module")
def trained(trained_dielectric):
    """The workflow script's models on the real DFPT set, small config (conftest, shared with the demo test)."""
    return trained_dielectric


@pytest.mark.slow
def test_trained_models_beat_constant_baselines(trained):
    m = json.loads(Path(trained.metrics).read_text())
    eps, gap = m["eps"], m["band_gap"]
    print(f"eps test MAE {eps['test_mae']:.3f} (mean {eps['test_mae_mean_baseline']:.3f}, "
          f"median {eps['test_mae_median_baseline']:.3f}); band gap test MAE {gap['test_mae']:.3f} eV "
          f"(mean {gap['test_mae_mean_baseline']:.3f})")
    assert m["data"]["n_clean"] == 1041 and m["data"]["split"]["test"] == 104
    assert eps["test_mae"] < eps["test_mae_mean_baseline"]
    assert gap["test_mae"] < gap["test_mae_mean_baseline"]
    assert not (Path(trained.eps_model).parent / ".dielectric_ckpt").exists()


@pytest.mark.slow
def test_saved_models_load_with_matgl_and_reproduce_test_mae(trained, dfpt):
    import matgl

    eps_model = matgl.load_model(trained.eps_model)  # a plain matgl directory, scaling folded in
    assert json.loads((Path(trained.eps_model) / "crystalrl.json").read_text())["target"] == "total"
    te = dfpt.indices("test")
    graphs, status = convert_many([dfpt.structures[i] for i in te], eps_model.element_types, eps_model.cutoff)
    assert set(status) == {"ok"}
    pred = predict_graphs(eps_model, graphs)
    assert pred.shape == (len(te), 6)
    mae = np.abs(eps_from_voigt(pred) - dfpt.eps_n[te]).mean()
    m = json.loads(Path(trained.metrics).read_text())
    assert mae == pytest.approx(m["eps"]["test_mae"], rel=1e-4)
    # the predictor gives the same numbers on the same structures
    p = DielectricPredictor(trained.eps_model, trained.gap_model).predict([dfpt.structures[i] for i in te])
    np.testing.assert_allclose(p["eps"], eps_from_voigt(pred), rtol=1e-5)


@pytest.mark.slow
def test_fom_on_real_alexandria_structures(trained, shared_data):
    cifs = []
    with tarfile.open(shared_data / "alexandria_sample" / "cifs.tar.gz") as tar:
        for member in tar.getmembers():
            if member.name.endswith(".cif") and len(cifs) < 150:
                cifs.append(tar.extractfile(member).read().decode())
    structures = [Structure.from_str(c, fmt="cif") for c in cifs]
    predictor = DielectricPredictor(trained.eps_model, trained.gap_model)
    out = predictor.predict(structures, batch_size=32)
    assert {k: len(v) for k, v in out.items()} == {"eps": 150, "band_gap": 150, "fom": 150, "status": 150}
    ok = out["status"] == "ok"
    assert ok.all(), out["status"][~ok][:3]
    assert np.isfinite(out["fom"]).all() and (out["band_gap"] >= 0).all() and (out["eps"] > 0).all()
    np.testing.assert_allclose(out["fom"], out["band_gap"] * out["eps"])
    assert np.std(out["fom"]) > 0  # not a constant
    # batching does not change results
    one = predictor.predict(structures[:5], batch_size=1)
    np.testing.assert_allclose(one["fom"], out["fom"][:5], rtol=1e-4)


@pytest.mark.slow
def test_invalid_structures_give_nan_with_status(trained):
    predictor = DielectricPredictor(trained.eps_model, trained.gap_model)
    lonely = Structure(Lattice.cubic(30.0), ["Na"], [[0, 0, 0]])              # no neighbour in cutoff
    exotic = Structure(Lattice.cubic(4.0), ["Og", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # not in element list
    dense = Structure(Lattice.cubic(1.2), ["Na"], [[0, 0, 0]])  # a weak generator's sample: 1.7 Å^3/atom
    out = predictor.predict([_rocksalt(), None, lonely, exotic, "not a cif", dense])
    assert np.isfinite(out["fom"][0]) and out["status"][0] == "ok"
    assert np.isnan(out["fom"][1:]).all()
    assert "denser than any solid" in out["status"][5]
    assert out["status"][1] == "no structure"
    assert "isolated atoms" in out["status"][2]
    assert "Og" in out["status"][3]
    assert "graph conversion failed" in out["status"][4]


def test_missing_model_dir_fails_fast(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a matgl model directory"):
        DielectricPredictor(tmp_path / "nope", tmp_path / "nope2")


def test_pretrained_band_gap_dir_is_used_not_retrained(dfpt_path, tmp_path):
    """A local band-gap model directory (stand-in for MEGNet-MP-2019.4.1-BandGap-mfi) is copied, not trained."""
    from matgl.config import DEFAULT_ELEMENTS
    from matgl.models import MEGNet

    from crystalrl.dielectric import train_dielectric

    torch.manual_seed(0)
    MEGNet(element_types=DEFAULT_ELEMENTS, ntypes_state=5, dim_state_embedding=16,
           include_state=True, cutoff=4.0).save(tmp_path / "mfi")
    cfg = {"epochs": 1, "model": {"units": 8, "dim_node_embedding": 8, "dim_edge_embedding": 8, "nblocks": 1,
                                  "cutoff": 4.0, "threebody_cutoff": 3.0},
           "band_gap_pretrained": str(tmp_path / "mfi")}
    m = train_dielectric(cfg, dfpt_path, tmp_path / "out")
    assert m["band_gap"]["source"].startswith("pretrained")
    assert "epochs_run" not in m["band_gap"]  # nothing was trained
    assert (tmp_path / "out" / "gap_model" / "state.pt").read_bytes() == (tmp_path / "mfi" / "state.pt").read_bytes()
    assert np.isfinite(m["band_gap"]["test_mae"])
