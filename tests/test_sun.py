"""Per-sample evaluation and the S.U.N. table on hand-checkable inputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from crystalrl.evaluate.sun import EvaluateConfig, evaluate_samples, sun_table
from crystalrl.stages import run_stage


def _flags_df(g, valid, stable, unique, novel, seconds=None):
    df = pd.DataFrame({"G": g, "valid_struct": valid, "valid_comp": valid, "valid": valid,
                       "stable": stable, "unique": unique, "novel": novel}).astype({"G": int})
    for c in df.columns[1:]:
        df[c] = df[c].astype(bool)
    df["sun"] = df["valid"] & df["stable"] & df["unique"] & df["novel"]
    if seconds is not None:
        df["seconds"] = seconds
    return df


@pytest.fixture
def model_a():
    # G=225: sun only in row 0 -> 1 of 6; G=1: rows 0, 1 -> 2 of 4
    return _flags_df([225] * 6 + [1] * 4,
                     valid=[1, 1, 1, 1, 0, 0] + [1, 1, 1, 0],
                     stable=[1, 1, 0, 1, 1, 0] + [1, 1, 0, 0],
                     unique=[1, 0, 1, 1, 0, 0] + [1, 1, 1, 0],
                     novel=[1, 1, 1, 0, 0, 0] + [1, 1, 1, 0],
                     seconds=[0.5] * 10)


def test_sun_table_rows_counts_and_rates(model_a):
    model_b = _flags_df([225] * 4, valid=[1] * 4, stable=[1, 1, 1, 0], unique=[1] * 4, novel=[1, 0, 1, 1])
    t = sun_table({"a": model_a, "b": model_b}, seconds={"b": 8.0})
    assert list(zip(t["model"], t["spacegroup"])) == [("a", 1), ("a", 225), ("a", "total"),
                                                      ("b", 225), ("b", "total")]
    a = t[t["model"] == "a"].set_index("spacegroup")
    assert a.loc[225, ["n", "n_valid", "n_stable", "n_unique", "n_novel", "n_sun"]].tolist() == [6, 4, 4, 3, 3, 1]
    assert a.loc[1, ["n", "n_valid", "n_stable", "n_unique", "n_novel", "n_sun"]].tolist() == [4, 3, 2, 3, 3, 2]
    # counts of the total row add up over space groups
    for col in ("n", "n_valid", "n_stable", "n_unique", "n_novel", "n_sun", "seconds"):
        assert a.loc["total", col] == a.loc[1, col] + a.loc[225, col]
    assert a.loc[225, "sun_rate"] == pytest.approx(1 / 6)
    assert a.loc[1, "stable_rate"] == pytest.approx(0.5)
    assert a.loc["total", "sun_rate"] == pytest.approx(0.3)
    assert a.loc["total", "valid_rate"] == pytest.approx(0.7)
    # per-sample seconds: 3 s for G=225 (1 S.U.N.), 2 s for G=1 (2), 5 s in all (3)
    assert a.loc[225, "sun_per_second"] == pytest.approx(1 / 3)
    assert a.loc[1, "sun_per_second"] == pytest.approx(1.0)
    assert a.loc["total", "sun_per_second"] == pytest.approx(0.6)
    # model b: total seconds 8 from the dict, 2 S.U.N. of 4
    b = t[t["model"] == "b"].set_index("spacegroup")
    assert b.loc["total", "sun_rate"] == pytest.approx(0.5)
    assert b.loc["total", "sun_per_second"] == pytest.approx(2 / 8)


def test_sun_table_counts_sun_and_msun_after_relaxation_where_present(model_a):
    relaxed = model_a.assign(sun_relaxed=[True, False] * 5, msun_relaxed=[False, False, True] + [False] * 7)
    t = sun_table({"a": relaxed, "old": model_a}).set_index(["model", "spacegroup"])
    assert t.loc[("a", "total"), ["n_sun_relaxed", "n_msun_relaxed"]].tolist() == [5, 1]
    assert t.loc[("a", "total"), "sun_relaxed_rate"] == pytest.approx(0.5)
    assert np.isnan(t.loc[("old", "total"), "n_sun_relaxed"])  # an eval table from before issue 26: no count


def test_sun_table_weighted_total(model_a):
    t = sun_table({"a": model_a}, sg_weights={225: 3.0, 1: 1.0, 62: 5.0}).set_index("spacegroup")
    # (3 * 1/6 + 1 * 2/4) / 4 = 0.25; 62 has no samples and is left out of the weights
    assert t.loc["total", "sun_rate"] == pytest.approx(0.25)
    assert t.loc["total", "stable_rate"] == pytest.approx((3 * 4 / 6 + 1 * 2 / 4) / 4)
    assert t.loc["total", "sun_per_second"] == pytest.approx(0.25 * 10 / 5)
    assert t.loc["total", "n_sun"] == 3  # counts stay plain sums


def _nacl(a=5.64):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _cscl():
    return Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _kbr():
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(6.6), ["K", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_evaluate_samples_definitions():
    close = Structure(Lattice.cubic(6.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    cifs = [_nacl().to(fmt="cif"),            # 0 valid, in training -> not novel
            _cscl().to(fmt="cif"),            # 1 valid, novel, unique, stable -> S.U.N.
            _cscl().to(fmt="cif"),            # 2 duplicate of 1 -> not unique
            close.to(fmt="cif"),              # 3 atoms 0.3 A apart -> invalid, so not unique/novel
            None,                             # 4 decoding failed
            "data_garbage\n",                 # 5 unparseable CIF
            _kbr().to(fmt="cif")]             # 6 valid, novel, unique but unstable
    samples = pd.DataFrame({"sample_id": [f"s{i}" for i in range(7)], "G": [225, 221, 221, 1, 1, 1, 225],
                            "cif": cifs, "seconds": 0.1})
    train = pd.DataFrame({"cif": [_nacl(5.5).to(fmt="cif"), _kbr().to(fmt="cif").replace("K", "Rb")],
                          "formula": ["NaCl", "RbBr"], "spacegroup": [225, 225]})
    e_hull = np.array([0.0, 0.05, 0.05, 0.0, np.nan, np.nan, 0.3])
    cfg = EvaluateConfig.from_dict({"stable_threshold": 0.1})
    out = evaluate_samples(samples, train_df=train, e_hull=e_hull, config=cfg)
    assert out["valid"].tolist() == [True, True, True, False, False, False, True]
    assert out["stable"].tolist() == [True, True, True, True, False, False, False]
    assert out["unique"].tolist() == [True, True, False, False, False, False, True]
    assert out["novel"].tolist() == [False, True, True, False, False, False, True]
    assert out["sun"].tolist() == [False, True, False, False, False, False, False]
    assert "s4" in out["reason"].iloc[4] and "s5" in out["reason"].iloc[5]
    assert out["G"].tolist() == samples["G"].tolist()
    with pytest.raises(ValueError, match="e_hull has shape"):
        evaluate_samples(samples, train_df=train, e_hull=e_hull[:3], config=cfg)


def test_sun_table_stage_writes_sets(tmp_path, model_a):
    paths = []
    for model in ("base", "ppo_ehull"):
        for set_name in ("dist", "per_sg"):
            p = tmp_path / "eval" / model / f"{set_name}.parquet"
            p.parent.mkdir(parents=True, exist_ok=True)
            model_a.to_parquet(p)
            paths.append(str(p))
    tokens = tmp_path / "tokens_train.parquet"
    pd.DataFrame({"G": [225] * 3 + [1]}).to_parquet(tokens)
    out = tmp_path / "sun.csv"
    run_stage("sun_table", dict(evals=paths, train_tokens=tokens), dict(table=out), {}, log=tmp_path / "log")
    t = pd.read_csv(out)
    assert set(t["model"]) == {"base", "ppo_ehull"}
    dist = t[t["set"] == "dist"]
    assert dist["spacegroup"].tolist() == ["total", "total"]  # dist: only the pooled headline row
    assert dist["sun_rate"].tolist() == pytest.approx([0.3, 0.3])
    per = t[(t["set"] == "per_sg") & (t["model"] == "base")].set_index("spacegroup")
    assert list(per.index) == ["1", "225", "total"]
    assert per.loc["total", "sun_rate"] == pytest.approx(0.25)  # weights 3:1 from the training tokens
    # no half-written file left behind
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".sun")] == []


@pytest.mark.slow
def test_evaluate_stage_with_chgnet_and_bundled_hull(tmp_path):
    """The stage end to end: CHGNet single points (offline weights) on pymatgen's bundled MP hull."""
    close = Structure(Lattice.cubic(6.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    samples = pd.DataFrame({"sample_id": ["a", "b", "c", "d"], "G": [225, 221, 1, 225],
                            "cif": [_nacl().to(fmt="cif"), _cscl().to(fmt="cif"), close.to(fmt="cif"), None],
                            "seconds": 0.25})
    train = pd.DataFrame({"id": ["t0"], "cif": [_nacl(5.6).to(fmt="cif")], "formula": ["NaCl"],
                          "spacegroup": [225]})
    samples.to_parquet(tmp_path / "samples.parquet")
    train.to_parquet(tmp_path / "train.parquet")
    run_stage("evaluate", dict(samples=tmp_path / "samples.parquet", train=tmp_path / "train.parquet", hull=[]),
              dict(eval=tmp_path / "eval.parquet"),
              dict(evaluate={"stable_threshold": 0.1, "matcher": {}, "match_spacegroup": False,
                             "relax": {"max_steps": 50}, "cross_check_mlip": {"backend": "chgnet", "device": "cpu"}},
                   mlip={"backend": "chgnet", "model": None, "device": "cpu", "batch_size": 8},
                   hull={"reference": "mp_bundled", "path": None}), log=tmp_path / "log")
    out = pd.read_parquet(tmp_path / "eval.parquet")
    assert out["sample_id"].tolist() == ["a", "b", "c", "d"]
    # valid samples get a finite e_hull, the invalid ones NaN; rocksalt NaCl is at or below the hull
    assert np.isfinite(out["e_hull"].iloc[:2]).all() and out["e_hull"].iloc[2:].isna().all()
    assert out["stable"].iloc[0] and out["e_hull"].iloc[0] < 0.1
    assert out["novel"].tolist() == [False, True, False, False]
    assert out["sun"].tolist() == [False, bool(out["e_hull"].iloc[1] < 0.1), False, False]
    # issue 26: the valid samples relaxed on the same hull, the rest keep their rows with NaN
    assert np.all(out["e_hull_relaxed"].iloc[:2] <= out["e_hull"].iloc[:2] + 1e-4)
    assert out["e_hull_relaxed"].iloc[2:].isna().all() and out["cif_relaxed"].iloc[2:].isna().all()
    assert np.isfinite(out["rmsd_relax"].iloc[0]) and out["relax_converged"].iloc[0]
    expected = (out["valid"] & out["unique"] & out["novel"] & (out["e_hull_relaxed"] <= 0.0)).tolist()
    assert out["sun_relaxed"].tolist() == expected
    # the cross-check with the same MLIP re-scores the stable rows' relaxed structures to the same e_hull
    stable = (out["e_hull"] < 0.1) | (out["e_hull_relaxed"] < 0.1)
    assert np.allclose(out["e_hull_check"][stable], out["e_hull_relaxed"][stable], atol=1e-3)
    assert out["e_hull_check"][~stable].isna().all() and out["check_agrees"][stable].all()
