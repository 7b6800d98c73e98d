# Config validation, paths and the small helpers every rule file uses.
import os

from crystalrl.config import ppo_run_config, validate_config

validate_config(config)

# Rule scripts inherit the environment: jobs share compiled JAX programs through this cache.
if config["jax_cache_dir"]:
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(config["jax_cache_dir"]))

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


# Downloads need the internet, which cluster compute nodes often lack: run them where snakemake runs.
localrules:
    download_data,
    download_hull,
    download_dielectric,
    sun_table_default_run,


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


def dielectric_spacegroups(runs):
    """Space groups the FoM runs were rewarded on (all evaluation groups if they used "train")."""
    groups = set()
    for n in runs:
        sg = ppo_run_config(config, n)["spacegroups"]
        groups |= set(sg) if isinstance(sg, list) else set(config["sample"]["spacegroups"])
    return sorted(groups)


def eval_targets():
    return expand(f"{R}/eval/{{model}}/{{set}}.parquet", model=MODELS, set=SAMPLE_SETS)


# Fig. 6 compares the base model with the PPO runs rewarded by the dielectric FoM.
DIELECTRIC_RUNS = [n for n in PPO_RUNS if ppo_run_config(config, n)["reward"] == "dielectric_fom"]
DIELECTRIC_MODELS = ["base"] + [f"ppo_{n}" for n in DIELECTRIC_RUNS] if DIELECTRIC_RUNS else []
DIELECTRIC_SPACEGROUPS = dielectric_spacegroups(DIELECTRIC_RUNS)

ALL_TARGETS = [
    f"{R}/sun_by_spacegroup.csv",
    f"{R}/figures/sun_per_spacegroup.png",
] + ([f"{R}/figures/dielectric_pareto.png"] if DIELECTRIC_RUNS else [])


HULL_TABLE = f"{R}/hull/reference.parquet"


def hull_input(wildcards=None):
    """Files the hull reference needs: the converted Alexandria table, or the user's file."""
    h = config["hull"]
    if h["reference"] == "alexandria":
        return [HULL_TABLE]
    if h["reference"] != "mp_bundled":
        return [h["reference"]]
    return []


def hull_params():
    h = dict(config["hull"])
    if h["reference"] == "alexandria":
        h["reference"] = HULL_TABLE
    return h
