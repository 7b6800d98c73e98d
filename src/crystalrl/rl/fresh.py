"""Did fine-tuning help? Rewards of fresh samples, drawn with the same keys for every model."""
from __future__ import annotations

import jax
import numpy as np
import pandas as pd

from crystalrl.evaluate.audit import audit_shares
from crystalrl.model.sampler import sample
from crystalrl.spacegroups import draw_spacegroups


def fresh_sample_rewards(models: dict[str, object], reward_fn, sg_probs: np.ndarray, *, n: int,
                         seeds=(0, 1), **sample_kw) -> pd.DataFrame:
    """Mean reward of `n` fresh samples per (model, seed).

    Every model draws its space groups and sampling noise from the same keys, so
    (base, seed s) and (ppo, seed s) differ only in the weights; the spread between
    seeds of one model is the noise any claimed gain must beat.
    """
    rows = []
    for name, model in models.items():
        for seed in seeds:
            k_g, k_s = jax.random.split(jax.random.key(seed))
            G = draw_spacegroups(k_g, sg_probs, n)
            structures, _status = sample(model, k_s, G, **sample_kw).decode()
            rr = reward_fn(structures)
            row = dict(model=name, seed=seed, n=n, reward_mean=float(np.mean(rr.reward)),
                       frac_valid=float(np.mean(rr.valid)), **hacking_audit(structures, rr.extras.get("e_hull")))
            for k, v in rr.extras.items():
                row[f"{k}_median"] = float(np.nanmedian(v)) if np.isfinite(v).any() else np.nan
            rows.append(row)
    return pd.DataFrame(rows)



def hacking_audit(structures, e_hull=None) -> dict[str, float]:
    """The reward-hacking shares (`crystalrl.evaluate.audit.audit_shares`) of sampled structures."""
    return audit_shares([None if s is None else s.composition.reduced_formula for s in structures], e_hull)
