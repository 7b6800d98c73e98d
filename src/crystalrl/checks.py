"""Config checks that need the file system or imports, run before any job (dry runs too).

Schema validation (`crystalrl.config`) catches misspelled keys and bad values; these
checks catch a config that points to something that is not there: a data file,
checkpoint or model file that does not exist and has no URL to fetch it from, a
`module:function` reward or `module:factory` MLIP that cannot be imported, or a name
that must match another part of the config (models in `evaluate.models`, runs in
`ppo_runs`). They run while Snakemake parses the workflow, so they hold in a work dir
that already holds results of another config, where Snakemake alone would say
"Nothing to be done" and keep the old data. Every problem names its config key.
"""
from __future__ import annotations

import difflib
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crystalrl.config import ConfigError, import_callable, ppo_run_config
from crystalrl.rewards import REWARDS, reward_components, reward_needs



def _missing(path: str | os.PathLike | None) -> bool:
    return path is not None and not Path(path).exists()


def must_exist(*keys_paths: tuple[str, str | None]) -> list[str]:
    """A problem for each (config key, path) whose path is set and does not exist."""
    return [f"config key '{key}': {path} does not exist" for key, path in keys_paths if _missing(path)]


def check_importable(spec: str, key: str, what: str = "module:function") -> str | None:
    """A problem naming `key` when `spec` ("module:attr") cannot be imported, else None."""
    try:
        import_callable(spec, key, what)
    except ConfigError as exc:
        return str(exc)
    return None


def is_remote_checkpoint(source: str) -> bool:
    """A published checkpoint to download (a name of the authors' files, or a URL), not a local file."""
    from crystalrl.model.hub import PUBLISHED

    return source in PUBLISHED or urllib.parse.urlparse(source).scheme in ("http", "https", "file")


def _published(cfg: Mapping[str, Any]) -> list[str]:
    problems = []
    for name, entry in cfg["published"].items():
        if not is_remote_checkpoint(entry["source"]):
            problems += must_exist((f"published.{name}.source", entry["source"]))
    base = cfg["pretrain"]["base_from"]
    if base is not None and base not in cfg["published"]:
        problems.append(f"config key 'pretrain.base_from': {base!r} is not an entry of 'published' "
                        f"({', '.join(cfg['published']) or 'none'})")
    return problems


def _data(cfg: Mapping[str, Any]) -> list[str]:
    from crystalrl.data.download import file_name_of
    from crystalrl.data.sources import expand_paths

    d = cfg["data"]
    problems = []
    for i, url in enumerate(d["urls"] or []):
        try:
            file_name_of(url)
        except ValueError as exc:
            problems.append(f"config key 'data.urls.{i}': {exc}")
    if d["source"] == "demo" or d["urls"]:
        return problems
    if not d["path"]:
        return [f"config key 'data.path': data.source {d['source']!r} needs a file, folder, glob or tarball"]
    try:
        expand_paths(d["path"])
    except FileNotFoundError:
        return [f"config key 'data.path': {d['path']!r} matches no input files, and 'data.urls' is empty "
                "(nothing to download it from)"]
    return []


def _model_files(cfg: Mapping[str, Any]) -> list[str]:
    return must_exist(("pretrain.init_from", cfg["pretrain"]["init_from"]))


def _ppo_and_models(cfg: Mapping[str, Any]) -> list[str]:
    problems = []
    # `ppo_runs` may hold settings of runs not in `ppo.runs`: configs merge, so a run a
    # base config defines cannot be deleted by an overriding one, only left out of the list.
    runs = list(cfg["ppo"]["runs"])
    for name in runs:
        try:
            run = ppo_run_config(cfg, name)
        except ConfigError as exc:
            problems.extend(str(exc).splitlines()[1:] or [str(exc)])
            continue
        if run["algorithm"] == "grpo" and run["batch_size"] % run["group_size"]:
            where = f"ppo_runs.{name}" if {"group_size", "batch_size"} & set(cfg["ppo_runs"].get(name, {})) else "ppo"
            problems.append(f"config key '{where}.group_size': {run['group_size']} does not divide the batch size "
                            f"{run['batch_size']} of run {name!r} (grpo draws batch_size / group_size space groups)")
        if run["algorithm"] in ("dpo", "ipo"):  # offline: pairs instead of a reward
            problems += _pairs(run, name, cfg["ppo_runs"].get(name, {}))
            continue
        key = f"ppo_runs.{name}.reward" if "reward" in cfg["ppo_runs"].get(name, {}) else "ppo.reward"
        for comp, part in reward_components(run["reward"]).items():
            where = key if isinstance(run["reward"], str) else f"{key}.{comp}"
            if reward_needs(comp, "dielectric") and not cfg["dielectric"]["enabled"]:
                problems.append(f"config key '{where}': run {name!r} uses the {comp} reward but "
                                "'dielectric.enabled' is false")
            elif comp not in REWARDS:
                problem = check_importable(comp, where)
                if problem:
                    near = difflib.get_close_matches(comp, REWARDS, n=1)  # a misspelled built-in name
                    hint = f"; did you mean '{near[0]}'?" if near and ":" not in comp else ""
                    problems.append(problem + f" (rewards: {', '.join(REWARDS)} or module:function){hint}")
            if part["normalize"] == "clip" and part.get("clip") is None:
                problems.append(f"config key '{where}.clip': normalize: clip needs clip: [lo, hi]")
    known = ["base", "sft"] + [f"ppo_{r}" for r in runs] + [f"published_{n}" for n in cfg["published"]]
    for m in cfg["evaluate"]["models"]:
        if m not in known:
            problems.append(f"config key 'evaluate.models': {m!r} is not a model of this config "
                            f"(models: {', '.join(known)})")
    for name, gen in cfg.get("generate", {}).items():
        if gen["model"] not in known:
            problems.append(f"config key 'generate.{name}.model': {gen['model']!r} is not a model of this config "
                            f"(models: {', '.join(known)})")
        if gen.get("prototype"):
            from crystalrl.model.prototype import Prototype

            problems += [f"config key 'generate.{name}.prototype': {p}"
                         for p in Prototype.from_dict(gen["prototype"]).problems(tables=False)]
    return problems


def _pairs(run: Mapping[str, Any], name: str, overrides: Mapping[str, Any]) -> list[str]:
    """A DPO/IPO run needs its preference pairs: `pool` or an existing table."""
    key = f"ppo_runs.{name}.pairs" if {"pairs", "algorithm"} & set(overrides) else "ppo.pairs"
    if run["pairs"] is None:
        return [f"config key '{key}': run {name!r} uses algorithm {run['algorithm']}, which needs preference pairs: "
                "'pool' (the base model's relaxed sft_pool samples) or a Parquet/CSV file with columns "
                "chosen_cif, rejected_cif"]
    return [] if run["pairs"] == "pool" else must_exist((key, run["pairs"]))


def _dielectric(cfg: Mapping[str, Any]) -> list[str]:
    d = cfg["dielectric"]
    uses_fom = any(reward_needs(ppo_run_config(cfg, n)["reward"], "dielectric") for n in cfg["ppo"]["runs"])
    if not (d["enabled"] and uses_fom):
        return []
    problems = []
    if not d["data"]:
        problems.append("config key 'dielectric.data': a dielectric_fom run needs the DFPT data file")
    elif _missing(d["data"]) and not d["url"]:
        problems.append(f"config key 'dielectric.data': {d['data']} does not exist and 'dielectric.url' is null")
    return problems + must_exist(("dielectric.band_gap_pretrained", d["band_gap_pretrained"]),
                                 ("dielectric.band_gap.pretrained_path", d["band_gap"]["pretrained_path"]))


def check_config(cfg: Mapping[str, Any]) -> list[str]:
    """Every problem of a validated, defaulted config (`validate_config`) that would stop a
    job later; empty when the workflow can run. Relative paths are from the current directory."""
    from crystalrl import hull, mlip, relax

    problems = _data(cfg) + _model_files(cfg) + (_published(cfg) if cfg["published"] else [])
    problems += hull.check_config(cfg["hull"])
    problems += mlip.check_config(cfg["mlip"])
    problems += relax.check_config(cfg["relax"], cfg["mlip"])
    try:
        problems += _ppo_and_models(cfg) + _dielectric(cfg)
    except ConfigError as exc:  # a bad ppo_runs entry, already reported above
        problems.append(str(exc))
    return problems
