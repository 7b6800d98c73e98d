# Config validation, paths and the small helpers every rule file uses.
import os

from crystalrl.config import ppo_run_config, validate_config

validate_config(config, workflow.source_path("../../config/schema.yaml"))

RUN = config["run"]
R = f"results/{RUN}"
LOGS = f"logs/{RUN}"
BENCH = f"benchmarks/{RUN}"
ENVS = "../../envs"

MODELS = config["evaluate"]["models"]
PPO_RUNS = config["ppo"]["runs"]
SAMPLE_SETS = ["dist", "per_sg"]  # Fig. 3 (training distribution) and Fig. 4 (per space group)
N_CHUNKS = config["relax"]["n_chunks"]
SAMPLE_SEED_OFFSET = {"dist": 0, "per_sg": 1, "sft_pool": 2}


wildcard_constraints:
    model=r"base|sft|ppo_[A-Za-z0-9_]+",
    set=r"dist|per_sg|sft_pool",
    split=r"train|val|test|sft_train",
    chunk=r"\d+",
    name=r"[A-Za-z0-9_]+",


def threads_for(stage):
    return config["threads"][stage]


def model_params():
    return dict(config["model"])


def sample_params(wildcards):
    """Sampling settings of one sample set; a dict of builtins so reruns track it."""
    s = config["sample"]
    p = {k: s[k] for k in ("batch_size", "temperature", "top_p", "elements")}
    p["seed"] = s["seed"] + SAMPLE_SEED_OFFSET[wildcards.set]
    if wildcards.set == "dist":
        p.update(n_samples=s["n_dist"], spacegroups="train")
    elif wildcards.set == "per_sg":
        p.update(n_samples=s["n_per_spacegroup"], spacegroups=list(s["spacegroups"]))
    else:
        p.update(n_samples=config["sft"]["n_samples"], spacegroups="train")
    return p


def ppo_params(wildcards):
    return ppo_run_config(config, wildcards.name)


def ppo_start_model(wildcards):
    return f"{R}/models/{ppo_params(wildcards)['start_from']}"


def curate_input(wildcards):
    d = config["data"]
    return [d["path"]] if d["path"] else []


def eval_targets():
    return expand(f"{R}/eval/{{model}}/{{set}}.parquet", model=MODELS, set=SAMPLE_SETS)


ALL_TARGETS = [
    f"{R}/sun_by_spacegroup.csv",
    f"{R}/report/done.txt",
]


def hull_input(wildcards=None):
    """Files the hull reference needs (downloaded for `alexandria`)."""
    h = config["hull"]
    if h["reference"] == "alexandria":
        return [h["path"]]
    if h["reference"] != "mp_bundled":
        return [h["reference"]]
    return []


def hull_params():
    h = dict(config["hull"])
    if h["reference"] == "alexandria":
        h["reference"] = h["path"]
    return h
