"""Stage `ppo`: fine-tune a model with a reward (Eq. 1 of the paper; `crystalrl.rl.ppo`).

params: ppo (the run's settings, `crystalrl.config.ppo_run_config`), mlip, hull (sections),
ckpt_dir, tokenize (section, for a pairs table), novelty (the `evaluate` keys of the novelty
reward, or none); inputs: start_model, train_tokens, hull (files, maybe none), dielectric (the
two trained model directories, or none), train (the curated training split, for the novelty
reward, or none), pairs (dpo/ipo runs: the base model's sft_pool samples and their relaxed table
for `pairs: pool`, else the user's table); outputs: model, metrics. A dpo/ipo run
(`crystalrl.rl.dpo`) writes the same artifacts.
"""
from __future__ import annotations

from crystalrl.devices import cap_torch_memory
from crystalrl.digest import digest_files
from crystalrl.hull import HullConfig, load_hull
from crystalrl.io import write_parquet_atomic
from crystalrl.mlip import MLIPConfig, load_mlip
from crystalrl.model.store import load_model, save_model
from crystalrl.rewards import composite_reward, make_reward, reward_components, reward_needs
from crystalrl.rl.dpo import OFFLINE, pairs_from_pool, pairs_from_table, run_dpo
from crystalrl.rl.guards import Guards, guarded
from crystalrl.rl.ppo import PPOConfig, run_ppo
from crystalrl.spacegroups import spacegroup_probs
from crystalrl.stages import metrics_writer
from crystalrl.train.data import load_token_arrays


def build_reward(spec, params: dict, dielectric_dirs=None, *, clip: float, guards: dict | None = None,
                 train: str | None = None):
    """The reward of `spec` (`ppo.reward`: a name or weighted components), the MLIP and hull of
    `params` loaded once and only where a component needs them, as is the novelty index of the
    training split `train` (a Parquet file) with `params["novelty"]`, behind the run's guards
    against reward hacking (`crystalrl.rl.guards`; none when None): the e_hull guards on the
    `ehull` component, the composition guards on the sum."""
    mlip_cfg = MLIPConfig.from_dict(params["mlip"])
    comps = reward_components(spec)
    hull = load_hull(HullConfig.from_dict(params["hull"])) if reward_needs(spec, "hull") else None
    mlip = load_mlip(mlip_cfg) if reward_needs(spec, "mlip") else None
    novelty = novelty_index(train, params.get("novelty") or {}) if reward_needs(spec, "train") else None
    g = Guards.from_dict(guards) if guards is not None else None
    fns = {}
    for name in comps:
        fns[name] = make_reward(name, mlip=mlip, hull=hull, dielectric_dirs=dielectric_dirs, clip=clip,
                                batch_size=mlip_cfg.batch_size, novelty=novelty)
    if len(comps) == 1 and next(iter(comps.values())) == dict(weight=1.0, normalize="none", clip=None):
        fn = next(iter(fns.values()))  # one reward as it is (the paper's)
        return fn if g is None else guarded(fn, g, hull=hull, clip=clip)
    if g is not None:
        fns = {name: guarded(fn, g, hull=hull, clip=clip, parts=("ehull",)) for name, fn in fns.items()}
    total = composite_reward({name: (fns[name], comps[name]) for name in comps})
    return total if g is None else guarded(total, g, parts=("composition",))


def novelty_index(train: str | None, settings: dict):
    """(NoveltyIndex of the training split, `settings`) for the novelty reward: built once per
    process from the formula column alone; a reference CIF is parsed only when a sample lands
    in its formula group."""
    import pandas as pd

    from crystalrl.evaluate.matching import NoveltyIndex

    if not train:
        raise ValueError("reward 'novelty' needs the training split (input 'train' of rule ppo)")
    table = pd.read_parquet(train, columns=["cif", "formula", "spacegroup"])
    return NoveltyIndex(table, settings.get("matcher"), settings.get("match_spacegroup", False)), settings


def reward_key(reward, params: dict, inputs) -> dict:
    """What the reward reads besides the samples, for the run's identity (`run_ppo`'s `run_key`):
    its settings and the content digests of its input files (hull, dielectric models, MLIP weights,
    training split of the novelty reward), so that a run never resumes on other references."""
    files = (_as_list(getattr(inputs, "hull", None)) + _as_list(getattr(inputs, "dielectric", None))
             + _as_list(getattr(inputs, "mlip_weights", None)) + _as_list(getattr(inputs, "train", None)))
    key = dict(reward=reward, files=digest_files(*files) if files else None)
    if reward_needs(reward, "mlip"):  # where the MLIP runs and in what batches does not change what it computes
        key.update(mlip={k: v for k, v in params["mlip"].items() if k not in ("device", "batch_size")},
                   hull=params["hull"])
    if reward_needs(reward, "train"):
        key.update(novelty=params.get("novelty") or {})
    return key


def _as_list(x) -> list:
    return [] if not x else [x] if isinstance(x, str) else list(x)


def load_pairs(cfg: PPOConfig, files: list[str], *, n_max: int, tokenize: dict | None, log, threads: int = 1):
    """(chosen, rejected) token arrays of a dpo/ipo run from its `pairs` input files."""
    import pandas as pd

    from crystalrl.config import section

    if cfg.pairs == "pool":
        samples, relaxed = files
        chosen, rejected, table = pairs_from_pool(pd.read_parquet(samples), pd.read_parquet(relaxed),
                                                  min_gap=cfg.pair_min_gap, chosen_max=cfg.pair_chosen_max)
        log.info("%d preference pairs from %s in %d space groups (mean e_hull chosen %.3f, rejected %.3f eV/atom)",
                 len(table), relaxed, table["G"].nunique(), table["chosen_e_hull"].mean(),
                 table["rejected_e_hull"].mean())
    else:
        tok = section("tokenize", tokenize)
        chosen, rejected, table = pairs_from_table(files[0], n_max=n_max, symprec=tok["symprec"], tol=tok["tol"],
                                                   processes=threads)
        log.info("%d preference pairs from %s (pairs with a CIF that does not tokenize dropped)", len(table), files[0])
    return chosen, rejected


def run(inputs, outputs, params, log, threads=1) -> None:
    cfg = PPOConfig.from_dict(params["ppo"])
    policy, model_cfg = load_model(inputs.start_model)
    reference, _ = load_model(inputs.start_model)
    if cfg.algorithm in OFFLINE:
        files = _as_list(getattr(inputs, "pairs", None))
        chosen, rejected = load_pairs(cfg, files, n_max=model_cfg.n_max, tokenize=params.get("tokenize"), log=log,
                                      threads=threads)
        log.info("%s %s from %s: beta %g, label smoothing %g, %d steps of %d pairs", cfg.algorithm.upper(),
                 outputs.model, inputs.start_model, cfg.dpo_beta, cfg.label_smoothing, cfg.steps, cfg.batch_size)
        policy, metrics = run_dpo(policy, reference, chosen, rejected, cfg, ckpt_dir=params["ckpt_dir"],
                                  run_key=dict(pairs=digest_files(*files)), on_metrics=metrics_writer(outputs.metrics),
                                  log=log)
        save_model(outputs.model, policy, model_cfg, extra_meta=dict(stage="ppo", start_from=str(inputs.start_model),
                                                                     ppo=cfg.to_dict()))
        write_parquet_atomic(metrics, outputs.metrics)
        return
    train_arrays, _ids = load_token_arrays(inputs.train_tokens)
    sg_p = spacegroup_probs(cfg.spacegroups, train_arrays["G"])
    dielectric = tuple(getattr(inputs, "dielectric", None) or ()) or None
    reward_fn = build_reward(cfg.reward, params, dielectric, clip=cfg.ehull_clip, guards=cfg.guards,
                             train=next(iter(_as_list(getattr(inputs, "train", None))), None))
    cap_torch_memory()  # JAX and the reward's torch models share each GPU by fixed fractions (crystalrl.devices)
    log.info("PPO %s from %s: reward %s, beta %g, %d steps of %d samples, guards %s", outputs.model,
             inputs.start_model, cfg.reward, cfg.beta, cfg.steps, cfg.batch_size,
             cfg.guards if cfg.guards.get("enabled") else "off (the paper's PPO)")
    policy, metrics = run_ppo(policy, reference, reward_fn, sg_p, cfg, ckpt_dir=params["ckpt_dir"],
                              run_key=reward_key(cfg.reward, params, inputs), on_metrics=metrics_writer(outputs.metrics), log=log)
    save_model(outputs.model, policy, model_cfg, extra_meta=dict(stage="ppo", start_from=str(inputs.start_model),
                                                                 ppo=cfg.to_dict()))
    write_parquet_atomic(metrics, outputs.metrics)
