"""The README's demo end to end: every offline stage, figures, tables, report, reruns,
and the check that PPO really lowered e_hull (issue 5) on the run's own models.

The demo runs once per session (module fixture, about 10 minutes on 2 cores); the
tests below read what it wrote.
"""
from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from test_workflow import make_workdir, planned_jobs, snakemake

FIGURES = ["pretrain_loss.png", "ppo_curves.png", "ehull_hist.png", "sun_per_spacegroup.png", "reward_audit.png"]
TABLES = ["overall", "sun_by_spacegroup", "validity", "distribution", "reward_audit"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    if os.environ.get("CRYSTALRL_DEMO_DIR"):  # developers: reuse a finished demo work dir (snakemake still runs)
        wd = Path(os.environ["CRYSTALRL_DEMO_DIR"])
    else:
        wd = make_workdir(tmp_path_factory.mktemp("demo"), {})
    t0 = time.time()
    snakemake(wd, "--cores", "2", timeout=1800)
    minutes = (time.time() - t0) / 60
    print(f"demo wall time: {minutes:.1f} min")
    return SimpleNamespace(wd=wd, res=wd / "results" / "demo", minutes=minutes,
                           config=yaml.safe_load((wd / "config" / "demo.yaml").read_text()))


def test_demo_writes_every_figure_and_table_within_15_minutes(demo):
    for f in FIGURES:
        w, h = Image.open(demo.res / "figures" / f).size
        assert w > 300 and h > 200, f
    for t in TABLES:
        assert (demo.res / "tables" / f"{t}.csv").stat().st_size > 0 and (demo.res / "tables" / f"{t}.md").exists()
    sun = pd.read_csv(demo.res / "sun_by_spacegroup.csv")
    assert {"base", "sft", "ppo_ehull"} <= set(sun["model"])
    # the README promises minutes on 2 cores; the issue sets 15 as the limit
    assert demo.minutes < 15, f"demo took {demo.minutes:.1f} min"


def test_demo_hands_on_candidates_a_chemist_can_open(demo):
    """Issue 26: per model a candidates folder: the table, a CIF per candidate, one extxyz, MPRelaxSet
    folders for the best, and every decodable sample in LeMat-GenBench's CSV form."""
    from ase.io import read as ase_read
    from pymatgen.core import Structure

    dft_dirs = 0
    for model in demo.config["evaluate"]["models"]:
        folder = demo.res / "candidates" / model
        table = pd.read_csv(folder / "candidates.csv", keep_default_na=False)
        e_hull, relaxed = (pd.to_numeric(table[c], errors="coerce") for c in ("e_hull", "e_hull_relaxed"))
        assert ((e_hull <= 0.1) | (relaxed <= 0.1)).all() and table["valid"].all()  # as generated or relaxed
        for cif in table["cif_file"]:
            assert len(Structure.from_file(folder / cif)) == len(ase_read(folder / cif))
        if len(table):
            assert len(ase_read(folder / f"{model}.extxyz", index=":")) == len(table)
        dft_dirs += sum(1 for d in table["dft_dir"] if d and (folder / d / "POSCAR").exists())
        assert len(pd.read_csv(folder / "lemat_genbench.csv")) > 64
    assert dft_dirs >= 1  # the demo's models make a few stable samples between them


def test_training_curves_are_in_tensorboard(demo):
    """Issue 28: pretrain, SFT and PPO leave TensorBoard event files that tensorboard's own reader
    loads, with the steps of their metrics tables."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name, tag in (("pretrain_base", "val_loss"), ("sft", "val_loss"), ("ppo_ehull", "reward_mean")):
        acc = EventAccumulator(str(demo.res / "tensorboard" / name))
        acc.Reload()
        metrics = pd.read_parquet(demo.res / "metrics" / f"{name}.parquet")
        steps = [e.step for e in acc.Scalars(tag)]
        assert steps == metrics.dropna(subset=[tag])["step"].tolist(), (name, steps)


#: docs/artifacts.md's "Artifact columns" row -> a file of that kind the demo writes
DOCUMENTED = {"data/{train,val,test}.parquet": "data/train.parquet",
              "data/rejected.parquet": "data/rejected.parquet",
              "data/tokens_{split}.parquet": "data/tokens_train.parquet",
              "metrics/pretrain_base.parquet": "metrics/pretrain_base.parquet",
              "metrics/ppo_{name}.parquet": "metrics/ppo_ehull.parquet",
              "samples/{model}/{dist,per_sg}.parquet": "samples/base/dist.parquet",
              "relax/{model}/{set}.parquet": "relax/base/sft_pool.parquet",
              "eval/{model}/{set}.parquet": "eval/base/dist.parquet",
              "candidates/{model}/candidates.csv": "candidates/base/candidates.csv"}


def documented_columns(docs: Path) -> dict[str, list[str]]:
    """file -> the names listed first in its row of the 'Artifact columns' table: backticked words
    before any parenthesis; `x*` and `<x>_mean` stand for families of columns."""
    import re

    table = docs.read_text().split("## Artifact columns")[1].split("\n\n")[0]
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        for file in re.findall(r"`([^`]+)`", cells[0]):
            names = []
            for chunk in re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", cells[1])):
                names += [re.sub(r"\[\d+\]$", "", n.strip()) for n in chunk.split(",") if n.strip()]
            out[file] = names
    return out


def undocumented(columns, names) -> tuple[list[str], list[str]]:
    """(columns no documented name covers, documented plain names missing from the columns)."""
    import fnmatch

    patterns = [n.replace("<", "[").replace(">", "]").replace("[name]", "*").replace("[extra]", "*")
                .replace("[component]", "*") for n in names]
    extra = [c for c in columns if not any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    missing = [n for n in names if not any(ch in n for ch in "*<") and n not in columns]
    return extra, missing


def check_artifact_columns(res: Path, docs: Path) -> dict:
    doc = documented_columns(docs)
    problems = {}
    for row, example in DOCUMENTED.items():
        assert row in doc, f"docs/artifacts.md has no row for {row}"
        path = res / example
        cols = list(pd.read_csv(path, nrows=0).columns) if path.suffix == ".csv" else list(
            pd.read_parquet(path).columns)
        extra, missing = undocumented(cols, doc[row])
        if extra or missing:
            problems[row] = dict(undocumented=extra, not_written=missing)
    return problems


def test_artifact_columns_are_the_documented_ones(demo):
    """Issue 28: one artifacts table, tested against what the stages write: a column added without
    its line in docs/artifacts.md (or documented and gone) fails here."""
    problems = check_artifact_columns(demo.res, Path(__file__).resolve().parents[1] / "docs" / "artifacts.md")
    assert not problems, problems
    extra, missing = undocumented(["id", "source", "new_column"], ["id", "source", "cif"])
    assert extra == ["new_column"] and missing == ["cif"]  # the check can fail


def test_report_html_embeds_every_figure(demo):
    snakemake(demo.wd, "--report", "report.html")
    html = (demo.wd / "report.html").read_text(errors="replace")
    for f in FIGURES:
        png = (demo.res / "figures" / f).read_bytes()
        # the page is self-contained: each PNG is in it byte for byte (base64), not linked
        assert base64.b64encode(png).decode()[:2000] in html, f"{f} is not embedded in report.html"


def test_named_generation_keeps_its_prototype_and_is_scored_and_exported(demo):
    """Issue 27: `snakemake results/demo/generate/perovskite.parquet` (config generate.perovskite):
    every sample is an ABO3 of Pm-3m with A, B and O on the sites asked, evaluated and exported;
    only that generation's jobs run."""
    from pymatgen.core import Structure

    target = "results/demo/generate/perovskite.parquet"
    assert planned_jobs(snakemake(demo.wd, "-n", target)) == {"sample": 1, "evaluate": 1, "generate": 1}
    snakemake(demo.wd, "--cores", "2", target)
    gen = demo.config["generate"]["perovskite"]
    table = pd.read_parquet(demo.wd / target)
    assert len(table) == gen["n_samples"] and {"e_hull", "valid", "sun", "cif"} <= set(table.columns)
    sites = gen["prototype"]["atoms"]
    for cif in table["cif"].dropna():
        s = Structure.from_str(cif, fmt="cif")
        counts = s.composition.get_el_amt_dict()
        assert len(s) == 5 and counts.get("O") == 3, counts
        assert {el for el in counts if el != "O"} <= set(sites[0]) | set(sites[1]), counts
    assert (demo.res / "generate" / "perovskite" / "lemat_genbench.csv").exists()


def test_second_run_is_a_noop_and_ppo_beta_reruns_only_downstream(demo):
    assert planned_jobs(snakemake(demo.wd, "-n")) == {}
    extra = demo.wd / "extra.yaml"
    try:
        extra.write_text(yaml.safe_dump({"ppo": {"beta": 0.5}}))
        jobs = planned_jobs(snakemake(demo.wd, "-n"))
    finally:
        extra.write_text(yaml.safe_dump({}))
    assert set(jobs) == {"ppo", "sample", "evaluate", "sun_table", "report", "candidates", "all"}, jobs
    assert jobs["sample"] == 2 and jobs["evaluate"] == 2 and jobs["candidates"] == 1  # ppo_ehull's only


def test_ppo_lowers_e_hull_of_fresh_samples_beyond_seed_noise(demo):
    """Issue 5: fresh samples after PPO sit lower than before by more than two base seeds differ.

    e_hull here is the reward's: clipped to 10 eV/atom, with undecodable, overlapping or
    unscorable samples counted at 10 (what PPO optimises, so what it must improve).
    """
    from crystalrl.config import validate_config
    from crystalrl.model.store import load_model
    from crystalrl.rl.fresh import fresh_sample_rewards
    from crystalrl.spacegroups import spacegroup_probs
    from crystalrl.stages.ppo import build_reward
    from crystalrl.train.data import load_token_arrays

    cfg = validate_config(dict(demo.config))
    train, _ = load_token_arrays(demo.res / "data" / "tokens_train.parquet")
    reward = build_reward("ehull", cfg, clip=cfg["ppo"]["ehull_clip"])
    models = {name: load_model(demo.res / "models" / name)[0] for name in ("base", "ppo_ehull")}
    df = fresh_sample_rewards(models, reward, spacegroup_probs("train", train["G"]), n=128, seeds=(0, 1))
    metrics = pd.read_parquet(demo.res / "metrics" / "ppo_ehull.parquet")
    df["e_hull_mean"] = -df["reward_mean"]
    print(df.to_string())
    base = df[df.model == "base"]["e_hull_mean"].to_numpy()
    ppo = df[df.model == "ppo_ehull"]["e_hull_mean"].to_numpy()
    drop, spread = base.mean() - ppo.mean(), abs(base[0] - base[1])
    print(f"PPO lowers mean e_hull by {drop:.2f} eV/atom; base seeds differ by {spread:.2f}")
    assert drop > spread, (drop, spread)

    # Issue 27: not by hacking. Unguarded, the demo's PPO made 68-75% single-element crystals against
    # 21-28% for base; with the guards the share stays within 10 points, and multi-element samples
    # themselves sit lower beyond seed noise.
    single = df.groupby("model")["single_element_frac"].mean()
    multi = df.set_index(["model", "seed"])["e_hull_multi_mean"]
    multi_drop, multi_spread = multi["base"].mean() - multi["ppo_ehull"].mean(), abs(multi["base"].diff().iloc[-1])
    print(f"single-element share: base {single['base']:.3f}, ppo {single['ppo_ehull']:.3f}; multi-element "
          f"e_hull falls by {multi_drop:.2f} eV/atom, base seeds differ by {multi_spread:.2f}")
    assert abs(single["ppo_ehull"] - single["base"]) <= 0.10, single
    assert multi_drop > multi_spread, (multi_drop, multi_spread)
    assert metrics["guard_single_element_mean"].gt(0).any()  # the guards ran, and were counted per step

    assert len(metrics) == cfg["ppo"]["steps"]
    assert np.isfinite(metrics["kl"]).all() and metrics["kl"].iloc[-1] > 0


def test_fom_reward_runs_on_generated_samples_and_drives_ppo(demo, trained_dielectric):
    """Issue 5: the dielectric FoM reward end to end on the demo's own samples: the base
    model samples space group 225 (the paper's FoM task), samples decode, the matgl models
    trained on the MP DFPT set score them, and PPO steps on that reward."""
    from crystalrl.model.store import load_model
    from crystalrl.rewards import make_reward
    from crystalrl.rl.fresh import fresh_sample_rewards
    from crystalrl.rl.ppo import PPOConfig, run_ppo
    from crystalrl.spacegroups import spacegroup_probs

    base = demo.res / "models" / "base"
    policy, ref = load_model(base)[0], load_model(base)[0]
    reward = make_reward("dielectric_fom",
                         dielectric_dirs=(trained_dielectric.eps_model, trained_dielectric.gap_model))
    sg225 = spacegroup_probs([225])
    fresh = fresh_sample_rewards({"base": policy}, reward, sg225, n=24, seeds=(0,))
    print(fresh.to_string())
    assert fresh["frac_valid"].iloc[0] >= 0.5  # most generated structures get a FoM
    assert fresh["band_gap_median"].iloc[0] >= 0 and fresh["eps_median"].iloc[0] > 0

    cfg = PPOConfig.from_dict(dict(beta=15.0, steps=2, batch_size=12, lr=1e-4, ckpt_every=10, seed=0))  # beta: Table S1, FoM
    _, metrics = run_ppo(policy, ref, reward, sg225, cfg)
    print(metrics[["step", "reward_mean", "fom_mean", "band_gap_mean", "eps_mean", "kl", "frac_valid"]])
    assert len(metrics) == 2 and np.isfinite(metrics[["reward_mean", "fom_mean", "kl"]].to_numpy()).all()
    assert (metrics["frac_valid"] >= 0.5).all() and (metrics["eps_mean"] > 0).all()


COMPOSITE = {"ehull": {"weight": 1.0}, "diversity": {"weight": 2.0, "normalize": "zscore"}}


def test_composite_reward_dry_runs_and_logs_every_component(demo):
    """Issue 27: a weighted sum of rewards plans a PPO rerun, and a demo-sized PPO on it logs each
    component and each guard per step (the MLIP and hull loaded once for the whole sum)."""
    from crystalrl.config import validate_config
    from crystalrl.model.store import load_model
    from crystalrl.rl.ppo import PPOConfig, run_ppo
    from crystalrl.spacegroups import spacegroup_probs
    from crystalrl.stages.ppo import build_reward
    from crystalrl.train.data import load_token_arrays

    extra = demo.wd / "extra.yaml"
    try:
        extra.write_text(yaml.safe_dump({"ppo": {"reward": COMPOSITE}}))
        jobs = planned_jobs(snakemake(demo.wd, "-n"))
    finally:
        extra.write_text(yaml.safe_dump({}))
    assert jobs.get("ppo") == 1, jobs

    cfg = validate_config({**demo.config, "ppo": {**demo.config["ppo"], "reward": COMPOSITE}})
    reward = build_reward(cfg["ppo"]["reward"], cfg, clip=cfg["ppo"]["ehull_clip"], guards=cfg["ppo"]["guards"])
    base = demo.res / "models" / "base"
    train, _ = load_token_arrays(demo.res / "data" / "tokens_train.parquet")
    run_cfg = PPOConfig.from_dict(dict(steps=2, batch_size=32, lr=3e-4, ckpt_every=10, seed=0, reward=COMPOSITE))
    _, metrics = run_ppo(load_model(base)[0], load_model(base)[0], reward, spacegroup_probs("train", train["G"]), run_cfg)
    cols = ["reward_ehull_mean", "reward_diversity_mean", "e_hull_mean", "guard_single_element_mean",
            "guard_repeat_mean", "abstain_mean"]
    print(metrics[["step", "reward_mean", *cols]])
    assert np.isfinite(metrics[cols].to_numpy()).all()
    assert (metrics["reward_diversity_mean"] > 0).all() and (metrics["reward_ehull_mean"] < 0).all()
