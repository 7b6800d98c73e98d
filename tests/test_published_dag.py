"""The DAG from a published checkpoint (issue 10): no pretrain job, and a run to the S.U.N.
table with a published comparison model sampled and scored like the DAG's own.

The checkpoints are written here in the exact published format (tests/published_format.py)
for the small reference config, so nothing is downloaded.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from published_format import random_haiku_params, write_published
from test_workflow import make_workdir, planned_jobs, snakemake

TARGET = "results/demo/sun_by_spacegroup.csv"


@pytest.fixture(scope="module")
def workdir(shared_reference, tmp_path_factory):
    from crystalrl.model.config import ModelConfig
    from crystalrl.model.published import read_params

    model = json.loads((shared_reference / "crystalformer_small_config.json").read_text())
    cfg = ModelConfig.from_dict(model)
    overrides = {
        "model": model,
        "published": {"small": {"source": "checkpoints/epoch_000300.pkl"},
                      "rl": {"source": "checkpoints/rl_epoch_000010.pkl"}},
        "pretrain": {"base_from": "small"},
        "data": {"limit": 80},
        "sample": {"n_dist": 16, "n_per_spacegroup": 2, "batch_size": 16},
        "evaluate": {"models": ["base", "published_rl"]},
    }
    wd = make_workdir(tmp_path_factory.mktemp("published"), overrides)
    write_published(wd / "checkpoints" / "epoch_000300.pkl",
                    read_params(shared_reference / "crystalformer_small_params.npz"), as_jax=True, steps=300)
    write_published(wd / "checkpoints" / "rl_epoch_000010.pkl", random_haiku_params(cfg, seed=3), steps=10)
    return wd


def test_imported_base_plans_no_pretrain_job(workdir):
    jobs = planned_jobs(snakemake(workdir, "-n", TARGET))
    assert "pretrain" not in jobs and jobs["import_base"] == 1 and jobs["import_checkpoint"] == 1, jobs
    assert jobs["sample"] == 4 and jobs["evaluate"] == 4, jobs  # base and published_rl, two sets each
    # the data stages still run: training space groups, the novelty reference
    assert jobs["curate"] == 1 and jobs["tokenize"] >= 1, jobs
    # with sft evaluated too, SFT fine-tunes the imported base (validated on the val split)
    extra = workdir / "extra.yaml"
    good = extra.read_text()
    try:
        cfg = yaml.safe_load(good)
        extra.write_text(yaml.safe_dump({**cfg, "evaluate": {"models": ["base", "sft"]}}))
        jobs = planned_jobs(snakemake(workdir, "-n", TARGET))
    finally:
        extra.write_text(good)
    assert "pretrain" not in jobs and jobs["sft"] == 1 and jobs["import_base"] == 1, jobs


@pytest.mark.slow
def test_runs_to_the_sun_table_from_the_published_base(workdir):
    snakemake(workdir, "--cores", "2", TARGET, timeout=1800)
    sun = pd.read_csv(workdir / TARGET)
    assert set(sun["model"]) == {"base", "published_rl"}
    total = sun[(sun["spacegroup"] == "total") & (sun["set"] == "dist")].set_index("model")
    assert (total["n"] == 16).all()
    meta = json.loads((workdir / "results/demo/models/base/meta.json").read_text())
    assert meta["published"]["source"] == "checkpoints/epoch_000300.pkl"
    assert len(meta["published"]["sha256"]) == 64
    samples = pd.read_parquet(workdir / "results/demo/samples/published_rl/per_sg.parquet")
    assert len(samples) == 16 and samples["sample_id"].str.startswith("published_rl-").all()
    # every model's novelty, the published one's too, is judged against the one train split, named
    ref = sun["novelty_reference"].unique()
    n_train = len(pd.read_parquet(workdir / "results/demo/data/train.parquet"))
    assert list(ref) == [f"train split, {n_train} curated rows of demo:aflow_prototypes ({n_train})"], ref
