"""The README's demo end to end: every offline stage, figures and tables, reruns."""
from __future__ import annotations

import os
import time

import pandas as pd
import pytest
import yaml
from PIL import Image

from test_workflow import make_workdir, planned_jobs, snakemake

FIGURES = ["pretrain_loss.png", "ppo_curves.png", "ehull_hist.png", "sun_per_spacegroup.png"]
TABLES = ["overall", "sun_by_spacegroup", "validity"]

# The full demo takes longer than CI's budget allows on 2 cores today (see issue 6):
# run it on demand until it is under 15 minutes.
pytestmark = pytest.mark.skipif(os.environ.get("CRYSTALRL_DEMO_TEST") != "1",
                                reason="full demo run: set CRYSTALRL_DEMO_TEST=1 (takes > 15 min on 2 cores)")


@pytest.mark.slow
def test_demo_end_to_end_then_reruns(tmp_path):
    wd = make_workdir(tmp_path, {})
    t0 = time.time()
    snakemake(wd, "--cores", "2", timeout=1800)
    minutes = (time.time() - t0) / 60
    print(f"demo wall time: {minutes:.1f} min")
    res = wd / "results" / "demo"
    for f in FIGURES:
        w, h = Image.open(res / "figures" / f).size
        assert w > 300 and h > 200, f
    for t in TABLES:
        assert (res / "tables" / f"{t}.csv").stat().st_size > 0 and (res / "tables" / f"{t}.md").exists()
    sun = pd.read_csv(res / "sun_by_spacegroup.csv")
    assert {"base", "sft", "ppo_ehull"} <= set(sun["model"])
    ppo = pd.read_parquet(res / "metrics" / "ppo_ehull.parquet")
    assert len(ppo) == 8 and ppo["kl"].notna().all()

    # a second run has nothing to do
    assert planned_jobs(snakemake(wd, "-n")) == {}
    # changing only ppo.beta reruns ppo and what depends on it, nothing upstream
    (wd / "extra.yaml").write_text(yaml.safe_dump({"ppo": {"beta": 0.5}}))
    jobs = planned_jobs(snakemake(wd, "-n"))
    assert set(jobs) == {"ppo", "sample", "evaluate", "sun_table", "report", "all"}, jobs
    assert jobs["sample"] == 2 and jobs["evaluate"] == 2  # ppo_ehull's two sample sets only
    # the README promises minutes on 2 cores; the issue sets 15 as the limit
    assert minutes < 15, f"demo took {minutes:.1f} min"
