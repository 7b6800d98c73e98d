"""Did fine-tuning help? Rewards of fresh samples, drawn with the same keys for every model."""
from __future__ import annotations

import jax
import numpy as np
import pandas as pd

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
    """The shares that show a reward being hacked (`crystalrl.rl.guards`): single-element
    samples among the decoded ones, and with an e_hull (eV/atom, NaN where unscored) the
    share of scored samples below -0.1 and the mean e_hull of scored multi-element samples."""
    n_el = np.array([len(s.composition.elements) if s is not None else 0 for s in structures])
    out = dict(single_element_frac=float(np.mean(n_el[n_el > 0] == 1)) if (n_el > 0).any() else np.nan)
    if e_hull is not None:
        e = np.asarray(e_hull, np.float64)
        scored = np.isfinite(e)
        out["below_hull_frac"] = float(np.mean(e[scored] < -0.1)) if scored.any() else np.nan
        multi = scored & (n_el > 1)
        out["e_hull_multi_mean"] = float(np.mean(e[multi])) if multi.any() else np.nan
    return out
