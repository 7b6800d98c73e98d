# Reads and checks the config, and derives what the rules need from it; no rule lives here.
import os

from crystalrl.checks import check_config, is_remote_checkpoint
from crystalrl.config import ConfigError, ppo_run_config, validate_config
from crystalrl.devices import runtime_env
from crystalrl.hull import HullConfig
from crystalrl.rewards import NOVELTY_SETTINGS, reward_needs
from crystalrl.mlip.backends import weights_file as mlip_weights_file
from crystalrl.mlip.config import check_config as mlip_check_config
from crystalrl.stages import SAMPLE_SETS

validate_config(config)
# Files, models and importable names the config points to are checked before any job
# runs (dry runs too), whatever results the work dir already holds.
_problems = check_config(config)
if _problems:
    raise ConfigError(
        "the configuration points to things that are not there:\n"
        + "\n".join(_problems)
    )

# Rule scripts inherit the environment: jobs share compiled JAX programs through this cache.
if config["jax_cache_dir"]:
    os.environ.setdefault(
        "JAX_COMPILATION_CACHE_DIR", os.path.abspath(config["jax_cache_dir"])
    )
# ... and learn where they must run (crystalrl.devices): not params, so changing it reruns nothing.
os.environ.update(runtime_env(config["runtime"]))

RUN = config["run"]
R = f"results/{RUN}"
LOGS = f"logs/{RUN}"
BENCH = f"benchmarks/{RUN}"
ENVS = "../../envs"

MODELS = config["evaluate"]["models"]
PPO_RUNS = config["ppo"]["runs"]
N_CHUNKS = config["relax"]["n_chunks"]
SAMPLE_SEED_OFFSET = {"dist": 0, "per_sg": 1, "sft_pool": 2}
GEN = "gen_"  # sample set gen_<name>: the named generation `generate.<name>`


# What a curate shard job reads: the parsing keys only, so that a change of the split or of
# deduplication reruns the merge (rule curate), not the parsing of every shard.
CURATE_PARSE = {
    k: v
    for k, v in config["data"].items()
    if k not in ("split", "split_by", "seed", "dedupe")
}


wildcard_constraints:
    model=r"base|sft|ppo_[A-Za-z0-9_]+|published_[A-Za-z0-9_]+",
    set=r"dist|per_sg|sft_pool|gen_[A-Za-z0-9_]+",
    split=r"train|val|test|sft_train",
    chunk=r"\d+",
    shard=r"\d+",
    name=r"[A-Za-z0-9_]+",


# The base model: pretrained by the DAG, or a published checkpoint imported (pretrain.base_from).
BASE_FROM = config["pretrain"]["base_from"]
BASE_MODEL = f"{R}/models/base"
PUBLISHED = config["published"]


def checkpoint_file(name):
    """Where published checkpoint `name` is read from: its local file, or where rule
    fetch_checkpoint puts a name or URL."""
    src = PUBLISHED[name]["source"]
    return f"resources/published/{name}.pkl" if is_remote_checkpoint(src) else src


def threads_for(stage):
    return config["threads"][stage]


def tokens(split):
    """The token Parquet of a split (rule tokenize; called by rules defined after it)."""
    return expand(rules.tokenize.output.tokens, split=split)[0]


def sample_params(wildcards):
    """Sampling settings of one sample set; a dict of builtins so reruns track it."""
    s = config["sample"]
    p = {
        k: s[k]
        for k in ("batch_size", "temperature", "top_p", "elements", "composition_bias")
    }
    if wildcards.set.startswith(GEN):
        return generation_params(
            wildcards.set[len(GEN) :], wildcards.model, p | {"seed": s["seed"]}
        )
    p["seed"] = s["seed"] + SAMPLE_SEED_OFFSET[wildcards.set]
    if wildcards.set == "dist":
        p.update(n_samples=s["n_dist"], spacegroups="train")
    elif wildcards.set == "per_sg":
        p.update(n_samples=s["n_per_spacegroup"], spacegroups=list(s["spacegroups"]))
    else:
        p.update(n_samples=config["sft"]["n_samples"], spacegroups="train")
    return p


def generation_params(name, model, sample):
    """A named generation's sampling settings (`generate.<name>` over `sample`)."""
    if name not in config["generate"]:
        raise ValueError(
            f"no generation {name!r}: config 'generate' has {sorted(config['generate'])}"
        )
    gen = config["generate"][name]
    if model != gen["model"]:
        raise ValueError(
            f"generation {name!r} samples model {gen['model']!r} (config key 'generate.{name}.model'), not {model!r}"
        )
    p = sample | {k: v for k, v in gen.items() if k != "model"}
    if p.get("prototype"):
        p["spacegroups"] = [p["prototype"]["spacegroup"]]
    return p


def generation_input(kind):
    """The gen_<name> sample set of the generation's model: its samples or its evaluation."""

    def files(w):
        if w.name not in config["generate"]:
            raise ValueError(
                f"no generation {w.name!r}: config 'generate' has {sorted(config['generate'])}"
            )
        pattern = (
            rules.sample.output.samples
            if kind == "samples"
            else rules.evaluate.output.eval
        )
        model = config["generate"][w.name]["model"]
        return expand(pattern, model=model, set=GEN + w.name)

    return files


def ppo_params(wildcards):
    return ppo_run_config(config, wildcards.name)


def ppo_start_model(wildcards):
    return f"{R}/models/{ppo_params(wildcards)['start_from']}"


def ppo_offline(wildcards):
    """Whether PPO run `wildcards.name` is a dpo/ipo run: pairs, no reward, no sampling."""
    return ppo_params(wildcards)["algorithm"] in ("dpo", "ipo")


def ppo_pairs_input(wildcards):
    """A dpo/ipo run's preference pairs: the base model's sft_pool samples and their relaxed
    table (pairs: pool), or the user's table; nothing for the on-policy algorithms."""
    p = ppo_params(wildcards)
    if not ppo_offline(wildcards):
        return []
    if p["pairs"] != "pool":
        return [p["pairs"]]
    pool = dict(model="base", set="sft_pool")
    return [
        expand(rules.sample.output.samples, **pool)[0],
        expand(rules.merge_relax.output.relaxed, **pool)[0],
    ]


def ppo_reward_needs(wildcards, what):
    """Whether a component of PPO run `wildcards.name`'s reward needs `what` loaded (an input
    of its job: crystalrl.rewards.REWARDS); dpo/ipo runs have no reward."""
    return not ppo_offline(wildcards) and reward_needs(
        ppo_params(wildcards)["reward"], what
    )


# What the novelty reward judges by: the evaluation's own settings, so that it pays for the
# samples the evaluation will count novel (params of the ppo jobs that use it, only).
NOVELTY_PARAMS = {k: config["evaluate"][k] for k in NOVELTY_SETTINGS}


def pairs_table(wildcards):
    """Whether the run reads a user's table of CIF pairs (tokenized in the job)."""
    p = ppo_params(wildcards)
    return p["algorithm"] in ("dpo", "ipo") and p["pairs"] not in (None, "pool")


def dielectric_spacegroups(runs):
    """Space groups the FoM runs were rewarded on (all evaluation groups if they used "train")."""
    groups = set()
    for n in runs:
        sg = ppo_run_config(config, n)["spacegroups"]
        groups |= (
            set(sg) if isinstance(sg, list) else set(config["sample"]["spacegroups"])
        )
    return sorted(groups)


# Fig. 6 compares the base model with the PPO runs rewarded by the dielectric FoM.
DIELECTRIC_RUNS = [
    n
    for n in PPO_RUNS
    if reward_needs(ppo_run_config(config, n)["reward"], "dielectric")
]
DIELECTRIC_MODELS = (
    ["base"] + [f"ppo_{n}" for n in DIELECTRIC_RUNS] if DIELECTRIC_RUNS else []
)
DIELECTRIC_SPACEGROUPS = dielectric_spacegroups(DIELECTRIC_RUNS)

ALL_TARGETS = (
    [
        f"{R}/sun_by_spacegroup.csv",
        f"{R}/figures/sun_per_spacegroup.png",
    ]
    + [f"{R}/candidates/{m}" for m in MODELS]
    + ([f"{R}/figures/dielectric_pareto.png"] if DIELECTRIC_RUNS else [])
)


# MLIP weights that the backend would download in every GPU job are fetched once, on the
# submitting host, by the local rule fetch_mlip_weights; the jobs read them from resources/.
MLIP_WEIGHTS = mlip_weights_file(config["mlip"])


def mlip_params():
    """The `mlip` section the jobs load their MLIP from: with the fetched weights file."""
    return (
        dict(config["mlip"], weights_path=MLIP_WEIGHTS)
        if MLIP_WEIGHTS
        else config["mlip"]
    )


def mlip_input():
    """The MLIP weights file of the jobs (rule inputs), if the workflow fetches one."""
    return [MLIP_WEIGHTS] if MLIP_WEIGHTS else []


# The evaluation's second MLIP (evaluate.cross_check_mlip): checked like `mlip`, its weights
# fetched the same way (rule fetch_cross_check_weights) when its backend downloads them.
CHECK_MLIP = config["evaluate"]["cross_check_mlip"]
if CHECK_MLIP is not None:
    _check_problems = mlip_check_config(CHECK_MLIP)
    if _check_problems:
        raise ConfigError(
            "invalid configuration:\n"
            + "\n".join(
                p.replace("config key 'mlip.", "config key 'evaluate.cross_check_mlip.")
                for p in _check_problems
            )
        )
CHECK_WEIGHTS = mlip_weights_file(CHECK_MLIP) if CHECK_MLIP is not None else None


def evaluate_params():
    """The `evaluate` section of the evaluate jobs: the second MLIP with its fetched weights file."""
    ev = {k: v for k, v in config["evaluate"].items() if k != "models"}
    if CHECK_WEIGHTS:
        ev["cross_check_mlip"] = dict(CHECK_MLIP, weights_path=CHECK_WEIGHTS)
    return ev


def evaluate_mlip_input():
    """The weights files of the evaluate jobs: the run's MLIP and the second one."""
    return sorted(set(mlip_input() + ([CHECK_WEIGHTS] if CHECK_WEIGHTS else [])))


# The Alexandria hull (json.bz2, minutes to parse) is converted once to this table (rule prepare_hull).
HULL_TABLE = f"{R}/hull/reference.parquet"


def hull_params():
    """The `hull` section the jobs load their hull from: the converted table for Alexandria."""
    h = dict(config["hull"])
    if h["reference"] == "alexandria":
        h.update(
            reference=HULL_TABLE, format="table", elemental_entries=None
        )  # the table holds them
    return h


def hull_input():
    """Files the hull of the jobs is read from (rule inputs)."""
    return HullConfig.from_dict(hull_params()).input_files()
