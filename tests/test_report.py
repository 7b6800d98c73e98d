"""Report figures and tables on small hand-checkable frames."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from crystalrl.report import figures, tables


def _eval(n, stable_frac, sun_frac, seed):
    rng = np.random.default_rng(seed)
    k_st, k_sun = int(n * stable_frac), int(n * sun_frac)
    e = np.concatenate([rng.uniform(-0.1, 0.09, k_st), rng.uniform(0.2, 1.0, n - k_st)])
    return pd.DataFrame({
        "sample_id": np.arange(n), "G": rng.choice([2, 225], n), "e_hull": e,
        "valid_struct": True, "valid_comp": np.arange(n) % 4 != 0, "valid": np.arange(n) % 4 != 0,
        "stable": e < 0.1, "unique": True, "novel": True, "sun": np.arange(n) < k_sun, "seconds": 0.5,
    })


def test_overall_rates_and_sun_per_second():
    t = tables.overall({"base": _eval(100, 0.4, 0.1, 0), "ppo_ehull": _eval(100, 0.7, 0.2, 1)})
    assert t["stable_rate"].tolist() == [0.4, 0.7]
    assert t["sun_rate"].tolist() == [0.1, 0.2]
    assert t["valid_rate"].tolist() == [0.75, 0.75]
    assert t["sun_per_second"].tolist() == pytest.approx([10 / 50.0, 20 / 50.0])


def test_stability_table_puts_sun_as_generated_beside_sun_and_msun_relaxed():
    """Issue 26: separate columns, each defined, naming both MLIPs, the correction and the hull."""
    from crystalrl.config import section

    df = _eval(8, 0.5, 0.25, 0)
    df["e_hull_relaxed"] = [-0.1, 0.0, 0.05, 0.2, np.nan, 0.3, 0.08, -0.3]
    df["rmsd_relax"] = [0.01, 0.02, np.nan, 0.03, np.nan, 0.05, 0.04, 0.1]
    df["relax_converged"] = [True] * 6 + [False, True]
    df["sun_relaxed"] = [True, True, False, False, False, False, False, False]
    df["msun_relaxed"] = [False, False, True, False, False, False, True, False]
    df["e_hull_check"] = [-0.05, 0.3, 0.04, np.nan, np.nan, np.nan, np.nan, np.nan]
    df["check_agrees"] = [True, False, True] + [False] * 5
    df["check_flag"] = [False, True, False] + [False] * 5
    t = tables.stability({"base": df}).iloc[0]
    assert (t["sun_rate"], t["sun_relaxed_rate"], t["msun_relaxed_rate"]) == (0.25, 0.25, 0.25)
    assert (t["n_relaxed"], t["n_converged"], t["median_rmsd_relax"]) == (7, 7, pytest.approx(0.035))
    assert (t["n_cross_checked"], t["cross_check_agree_rate"], t["n_cross_check_flagged"]) == (3, 2 / 3, 1)

    evaluate = section("evaluate", {"cross_check_mlip": {"backend": "sevennet", "model": "7net-0"}})
    d = tables.stability_definitions(evaluate, section("mlip", {"backend": "chgnet"}),
                                     section("hull", {"reference": "alexandria"})).set_index("column")["definition"]
    assert "e_hull < 0.1 eV/atom as generated" in d["sun_rate"] and "e_hull <= 0.0 eV/atom after relax" in \
        d["sun_relaxed_rate"] and "0.0 < e_hull <= 0.1" in d["msun_relaxed_rate"]
    for col in ("sun_rate", "sun_relaxed_rate", "msun_relaxed_rate"):
        assert "MLIP chgnet" in d[col] and "MP2020" in d[col] and "hull of alexandria" in d[col]
    assert "second MLIP sevennet 7net-0" in d["cross_check_agree_rate"]


def test_pareto_front():
    x = np.array([1.0, 2.0, 3.0, 2.5, 0.5])
    y = np.array([5.0, 4.0, 1.0, 0.5, 6.0])
    assert sorted(figures.pareto_front(x, y).tolist()) == [0, 1, 2, 4]


def test_dielectric_candidates_filters_and_ranks():
    preds = pd.DataFrame({"formula": ["A", "B", "C", "A"], "band_gap": [2.0, 3.0, 1.0, 2.0],
                          "eps": [10.0, 5.0, 50.0, 11.0], "fom": [20.0, 15.0, 50.0, 22.0],
                          "e_hull": [0.05, 0.0, 0.5, 0.01], "novel": [True, False, True, True]})
    top = tables.dielectric_candidates(preds, e_hull_max=0.1)
    assert top["formula"].tolist() == ["A", "B"] and top["fom"].tolist() == [22.0, 15.0]  # C unstable
    assert top["in_training_set"].tolist() == [False, True]


def test_figures_are_written(tmp_path):
    evals = {"base": _eval(200, 0.4, 0.1, 0), "ppo_ehull": _eval(200, 0.7, 0.2, 1)}
    figures.ehull_histograms(evals, tmp_path / "h.png")
    metrics = pd.DataFrame({"step": [1, 2, 3], "reward_mean": [-1, -0.8, -0.5], "e_hull_mean": [1, 0.8, 0.5],
                            "kl": [0.0, 0.5, 1.0]})
    figures.ppo_curves({"ehull": metrics}, tmp_path / "p.png")
    sun = pd.DataFrame({"model": ["base", "base", "base"], "spacegroup": ["2", "225", "total"],
                        "stable_rate": [0.3, 0.6, 0.4], "sun_rate": [0.1, 0.2, 0.15]})
    figures.sun_per_spacegroup(sun, tmp_path / "s.png")
    for f in ("h.png", "p.png", "s.png"):
        w, h = Image.open(tmp_path / f).size
        assert w > 300 and h > 200


def test_dpo_margins_and_reward_components_get_panels_of_their_own(tmp_path):
    """A dpo/ipo run has no e_hull: its preference margin gets a panel of its own (the figure
    grows from 2 panels to 3) instead of sharing the e_hull axis; so do the components of a
    weighted reward, each logged per step (issue 27)."""
    ppo = pd.DataFrame({"step": [1, 2, 3], "reward_mean": [-1, -0.8, -0.5], "e_hull_mean": [1, 0.8, 0.5],
                        "kl": [0.0, 0.5, 1.0]})
    dpo = pd.DataFrame({"step": [1, 2, 3], "reward_mean": [0, 0.1, 0.2], "margin": [0, 0.1, 0.2],
                        "kl": [0.0, -0.5, -1.0]})
    figures.ppo_curves({"ppo_s0": ppo, "ppo_s1": ppo}, tmp_path / "two.png")
    figures.ppo_curves({"ppo_s0": ppo, "dpo_s0": dpo}, tmp_path / "three.png")
    figures.ppo_curves({"dpo_s0": dpo}, tmp_path / "dpo.png")
    # a weighted reward's components (reward_<component>_mean) get a panel too
    weighted = ppo.assign(reward_ehull_mean=[-1, -0.8, -0.5], reward_novelty_mean=[0.2, 0.3, 0.4])
    figures.ppo_curves({"mix": weighted}, tmp_path / "parts.png")
    w2, w3, w_dpo, w_parts = (Image.open(tmp_path / f).size[0] for f in ("two.png", "three.png", "dpo.png", "parts.png"))
    assert w3 > 1.3 * w2 and abs(w_dpo - w2) < 0.1 * w2 and w_parts > 1.3 * w2


def test_markdown_table(tmp_path):
    paths = tables.write_table(pd.DataFrame({"model": ["base"], "rate": [0.12345]}), tmp_path / "t")
    assert paths[1].read_text().splitlines() == ["| model | rate |", "|---|---|", "| base | 0.123 |"]


def test_reward_audit_flags_a_batch_that_is_half_single_elements(tmp_path):
    """Issue 26: a PPO batch that is half single-element crystals (the base: one in ten) is
    flagged with a plain verdict; a model like the base is not."""
    import pandas as pd

    from crystalrl.evaluate.audit import audit_table
    from crystalrl.report import figures

    multi = ["NaCl", "MgO", "LiFeO2", "TiO2", "GaN", "ZnS", "CaF2", "BaTiO3", "SiC", "AlN"]
    base = pd.DataFrame({"formula": multi[:9] + ["Si"], "e_hull": [0.3] * 10})
    same = pd.DataFrame({"formula": multi[1:] + ["O2"], "e_hull": [0.2] * 10})
    hacked = pd.DataFrame({"formula": multi[:5] + ["Si", "O2", "Fe", "S", "Cu", None], "e_hull": [0.2] * 9 + [-0.5, np.nan]})
    table = audit_table({"base": base, "sft": same, "ppo_ehull": hacked}, train_formulas=multi * 3)
    v = table.set_index("model")["verdict"]
    assert v["base"] == "reference" and "no sign" in v["sft"]
    assert "single-element share 10% -> 50%" in v["ppo_ehull"] and "inspect" in v["ppo_ehull"]  # 10 decoded of 11
    assert table.set_index("model").loc["ppo_ehull", "below_hull_frac"] == 0.1
    assert "Si" in table.set_index("model").loc["ppo_ehull", "element_drift"] or "O" in table.set_index("model").loc["ppo_ehull", "element_drift"]
    # a run that piles onto one element's compounds (the demo's PPO went to Cd: +22.6 points)
    piled = pd.DataFrame({"formula": ["CdS", "CdO", "CdSe", "Cd", "CdF2"] + multi[:5], "e_hull": [0.2] * 10})
    v2 = audit_table({"base": base, "ppo_ehull": piled}, train_formulas=multi * 3).set_index("model")["verdict"]
    assert v2["ppo_ehull"].startswith("element drift Cd +") and "inspect" in v2["ppo_ehull"], v2["ppo_ehull"]
    figures.reward_audit(table, tmp_path / "audit.png")
    assert (tmp_path / "audit.png").stat().st_size > 10_000


def test_table_e_rows_trace_back_to_their_crystal_and_the_dfpt_set(shared_data, tmp_path):
    """Issue 26: the paper's Table E, traceable: each top candidate names its model and sample id,
    carries its CIF, and says whether it is in the DFPT set the dielectric models learned from
    (a crystal of that set is; a made-up one is not)."""
    from pymatgen.core import Lattice, Structure

    from crystalrl.stages import run_stage
    from crystalrl.structures import parse_structure

    dfpt = shared_data / "mp_dielectric" / "dielectric_constant.json.gz"
    known = parse_structure(pd.read_json(dfpt, orient="split")["structure"].iloc[0])
    made_up = Structure(Lattice.cubic(5.1), ["Cs", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    made_up.replace(0, "Rb")  # RbBr in the CsCl type: not how the DFPT set holds it, if at all
    rows = lambda fom: pd.DataFrame({  # noqa: E731
        "sample_id": [3, 8], "spacegroup": [known.get_space_group_info()[1], 221],
        "formula": [known.composition.reduced_formula, "RbBr"], "band_gap": [3.0, 4.0], "eps": [10.0, 6.0],
        "fom": fom, "status": "ok", "e_hull": [0.0, 0.05], "novel": [False, True],
        "cif": [known.to(fmt="cif"), made_up.to(fmt="cif")]})
    preds = {"base": rows([1.0, 2.0]), "ppo_fom": rows([30.0, 24.0])}
    for m, df in preds.items():
        df.to_parquet(tmp_path / f"{m}.parquet")
    out = {"scatter": str(tmp_path / "s.png"), "ehull": str(tmp_path / "e.png"), "table": str(tmp_path / "t.csv")}
    run_stage("report_dielectric", {"preds": [str(tmp_path / f"{m}.parquet") for m in preds], "dfpt": str(dfpt)},
              out, {"stable": 0.1, "matcher": {}, "match_spacegroup": False})
    top = pd.read_csv(tmp_path / "t.csv")
    assert top["model"].tolist() == ["ppo_fom", "ppo_fom"] and top["sample_id"].tolist() == [3, 8]
    assert top["in_dfpt_set"].tolist() == [True, False] and top["in_training_set"].tolist() == [True, False]
    assert Structure.from_str(top["cif"].iloc[1], fmt="cif").composition.reduced_formula == "RbBr"
