"""Config that points to nothing stops Snakemake before any job, naming the key (issue 13).

Each class of bad config runs twice: in a fresh work dir, and in one that already holds
finished results of a good config. In the second, Snakemake alone would say "Nothing
to be done" and keep the old data; the checks run while the workflow is parsed, so
they stop it there too, and nothing of the old results is touched.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_workflow import make_workdir, planned_jobs

TARGET = "results/demo/data/tokens_val.parquet"
GOOD = {"data": {"limit": 40}}

# class of mistake -> (overrides, the key the message must name, a fragment of the message)
BAD = {
    "data file": ({"data": {"source": "cif_dir", "path": "no/such/cifs.tar.gz"}}, "data.path", "matches no input"),
    "data folder": ({"data": {"source": "mp20_csv", "path": "no_such_folder/"}}, "data.path", "matches no input"),
    "checkpoint": ({"pretrain": {"init_from": "models/no_such_checkpoint.pkl"}}, "pretrain.init_from",
                   "does not exist"),
    "model file": ({"mlip": {"weights_path": "weights/no_such_model.ckpt"}}, "mlip.weights_path", "does not exist"),
    "hull file": ({"hull": {"reference": "no_such_hull.json.gz"}}, "hull.reference", "does not exist"),
    "module:function": ({"ppo": {"reward": "no_such_module:reward"}}, "ppo.reward", "cannot import"),
    "function missing": ({"ppo": {"reward": "user_rewards:no_such_function"}}, "ppo.reward", "no callable"),
    "module:factory": ({"mlip": {"backend": "no_such_module:make_calculator"}}, "mlip.backend", "no_such_module"),
    "model name": ({"evaluate": {"models": ["base", "ppo_nosuchrun"]}}, "evaluate.models", "ppo_nosuchrun"),
    "published checkpoint": ({"published": {"mine": {"source": "ckpts/no_such_epoch.pkl"}},
                              "pretrain": {"base_from": "mine"}}, "published.mine.source", "does not exist"),
    "base model name": ({"pretrain": {"base_from": "no_such_entry"}}, "pretrain.base_from", "not an entry of"),
    "URL without a file name": ({"data": {"source": "mp20_csv", "path": "raw/", "urls": ["https://example.org/a/.."]}},
                                "data.urls.0", "does not end in a file name"),
    "NaN": ({"ppo": {"lr": float("nan")}}, "ppo.lr", "not a finite number"),
    # three RL mistakes in one config: the check lists every one, each naming its key
    "RL algorithm, guard, reward weight": ({"ppo": {"algorithm": "gpro", "guards": {"single_elements": "abstain"},
                                                    "reward": {"ehull": {"weight": -0.5}, "diversity": {}}}},
                                           ("ppo.algorithm", "ppo.guards.single_elements", "ppo.reward.ehull.weight"),
                                           "did you mean 'single_element'"),
    "infinity": ({"sample": {"temperature": float("inf")}}, "sample.temperature", "not a finite number"),
    "named generation": ({"generate": {"mine": {"model": "ppo_nosuchrun", "prototype": {"spacegroup": 221,
                                                                                        "wyckoff": ["a", "?"]}}}},
                         ("generate.mine.model", "generate.mine.prototype"), "not a Wyckoff letter"),
    "elemental entries": ({"hull": {"reference": "no_such_formation.csv.gz", "format": "formation_table",
                                    "elemental_entries": "no_such_entries.json.gz"}},
                          "hull.elemental_entries", "does not exist"),
}


def start(workdir: Path, overrides: dict, *args: str) -> subprocess.Popen:
    (workdir / "extra.yaml").write_text(yaml.safe_dump(overrides))
    # tests/ on the path: user_rewards.py is importable, as a user's own module would be
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "snakemake", *args, "--configfile", "config/demo.yaml", "extra.yaml"],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": path})


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=900)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run(workdir: Path, overrides: dict, *args: str) -> subprocess.CompletedProcess:
    return finish(start(workdir, overrides, *args))


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return out


@pytest.fixture(scope="module")
def used_workdir(tmp_path_factory) -> Path:
    """A work dir holding finished results (curate + tokenize of the demo's first 40 rows)."""
    wd = make_workdir(tmp_path_factory.mktemp("used"), GOOD)
    proc = run(wd, GOOD, "--cores", "2", TARGET)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run(wd, GOOD, "-n", TARGET)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    return wd


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_stops_before_any_job(case, used_workdir, tmp_path):
    overrides, key, fragment = BAD[case]
    before = {p: p.stat().st_mtime_ns for p in (used_workdir / "results").rglob("*") if p.is_file()}
    workdirs = (make_workdir(tmp_path, {}), used_workdir)
    procs = [start(wd, _merge(GOOD, overrides), "-n", TARGET) for wd in workdirs]  # both parse at once
    for wd, proc in zip(workdirs, map(finish, procs)):
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, f"{case}: the dry run went ahead in {wd}:\n{out[-2000:]}"
        keys = key if isinstance(key, tuple) else (key,)
        assert all(f"config key '{k}'" in out for k in keys) and fragment in out, f"{case}:\n{out[-2000:]}"
        assert "Nothing to be done" not in out
    after = {p: p.stat().st_mtime_ns for p in (used_workdir / "results").rglob("*") if p.is_file()}
    assert after == before  # the finished results are untouched


@pytest.mark.slow
def test_tokenize_param_change_reruns_tokenize_not_curate(used_workdir):
    """A changed stage config reruns that stage and its descendants only (the used work dir:
    the demo's first 40 rows curated and tokenized)."""
    def planned(overrides):
        proc = run(used_workdir, overrides, "-n", TARGET)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return planned_jobs(proc.stdout + proc.stderr)

    assert planned(GOOD) == {}  # nothing to do
    assert planned({**GOOD, "tokenize": {"symprec": 0.05}}) == {"tokenize": 1}
    assert planned({"data": {**GOOD["data"], "seed": 7}}) == {"curate": 1, "tokenize": 1}
