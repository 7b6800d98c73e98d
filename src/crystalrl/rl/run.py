"""The `ppo` stage: load the start model, build the reward, fine-tune, save."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from crystalrl.io import write_parquet_atomic
from crystalrl.rewards import make_reward
from crystalrl.rl.ppo import PPOConfig, draw_spacegroups, run_ppo, spacegroup_probs
from crystalrl.train.checkpoint import load_model, save_model
from crystalrl.train.data import load_token_arrays


def decode_samples(out: dict) -> list:
    """Sampler output -> Structures; None for invalid lattices or failed decodes (counted by the reward)."""
    from crystalrl.tokenizer import decode_many

    arrays = {k: np.asarray(out[k]) for k in ("G", "L", "XYZ", "A", "W")}
    structures, _reasons = decode_many(**arrays)
    valid = np.asarray(out.get("valid_lattice", np.ones(len(structures), bool)))
    return [s if ok else None for s, ok in zip(structures, valid)]


def fresh_sample_rewards(models: dict[str, object], reward_fn, sg_probs: np.ndarray, *, n: int,
                         seeds=(0, 1), **sample_kw) -> pd.DataFrame:
    """Mean reward of `n` fresh samples per (model, seed): did fine-tuning help beyond seed noise?

    Every model draws its space groups and sampling noise from the same keys, so
    (base, seed s) and (ppo, seed s) differ only in the weights; the spread between
    seeds of one model is the noise any claimed gain must beat.
    """
    import jax

    from crystalrl.model.sampler import sample

    rows = []
    for name, model in models.items():
        for seed in seeds:
            k_g, k_s = jax.random.split(jax.random.key(seed))
            G = draw_spacegroups(k_g, sg_probs, n)
            rr = reward_fn(decode_samples(sample(model, k_s, G, **sample_kw)))
            row = dict(model=name, seed=seed, n=n, reward_mean=float(np.mean(rr.reward)),
                       frac_valid=float(np.mean(rr.valid)))
            for k, v in rr.extras.items():
                row[f"{k}_median"] = float(np.nanmedian(v)) if np.isfinite(v).any() else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def run_ppo_stage(*, start_model: str, train_tokens: str, ppo_cfg: dict, mlip_cfg: dict, hull_cfg: dict,
                  ckpt_dir: str, out_model: str, out_metrics: str, dielectric_dirs=None,
                  log: logging.Logger | None = None) -> pd.DataFrame:
    log = log or logging.getLogger("crystalrl.ppo")
    cfg = PPOConfig.from_dict(ppo_cfg)
    policy, model_cfg = load_model(start_model)
    reference, _ = load_model(start_model)
    train_arrays, _ids = load_token_arrays(train_tokens)
    sg_p = spacegroup_probs(ppo_cfg.get("spacegroups", "train"), train_arrays["G"])
    reward_fn = make_reward(ppo_cfg.get("reward", "ehull"), mlip_cfg=mlip_cfg, hull_cfg=hull_cfg,
                            dielectric_dirs=dielectric_dirs, clip=ppo_cfg.get("ehull_clip", 10.0))
    log.info("PPO %s from %s: reward %s, beta %g, %d steps of %d samples", out_model, start_model,
             ppo_cfg.get("reward"), cfg.beta, cfg.steps, cfg.batch_size)
    policy, metrics = run_ppo(policy, reference, reward_fn, decode_samples, sg_p, cfg,
                              ckpt_dir=ckpt_dir, metrics_path=out_metrics, log=log)
    save_model(out_model, policy, model_cfg, extra_meta=dict(stage="ppo", start_from=str(start_model),
                                                             ppo=ppo_cfg))
    write_parquet_atomic(metrics, out_metrics)
    return metrics
