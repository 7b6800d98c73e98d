"""Which space groups to sample: the one home of drawing them.

Sampling is conditioned on the space group, so every consumer first picks groups:
- "train": the training set's histogram, as the public RL code does;
- a list of groups: PPO draws uniformly over it; a sample set (paper Fig. 4) takes
  `n` of each, in order.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crystalrl.wyckoff import N_SG


def spacegroup_probs(spacegroups: str | Sequence[int], train_G: np.ndarray | None = None) -> np.ndarray:
    """(230,) probabilities: the training histogram for "train", else uniform over a list."""
    p = np.zeros(N_SG)
    if isinstance(spacegroups, str):
        if spacegroups != "train" or train_G is None:
            raise ValueError(f"spacegroups must be 'train' (with training tokens) or a list, got {spacegroups!r}")
        np.add.at(p, np.asarray(train_G, int) - 1, 1.0)
    else:
        groups = np.asarray(spacegroups, int)
        if groups.size == 0 or np.any((groups < 1) | (groups > N_SG)):
            raise ValueError(f"spacegroups must be space groups 1..230, got {list(spacegroups)!r}")
        p[groups - 1] = 1.0
    if p.sum() == 0:
        raise ValueError("no space group to sample from (are the training tokens empty?)")
    return p / p.sum()


def draw_spacegroups(key: jax.Array, sg_probs: np.ndarray, n: int) -> np.ndarray:
    """(n,) space-group numbers 1..230 drawn from `sg_probs` with a JAX key (PPO, fresh samples)."""
    return np.asarray(jax.random.choice(key, N_SG, (n,), p=jnp.asarray(sg_probs)) + 1)


def sample_set_spacegroups(spacegroups: str | Sequence[int], n: int, train_G: np.ndarray,
                           seed: int) -> np.ndarray:
    """The groups of a sample set: `n` draws from the training histogram ("train"), or
    `n` of each listed group in order (the per-space-group evaluation of paper Fig. 4)."""
    if isinstance(spacegroups, str):
        p = spacegroup_probs(spacegroups, train_G)
        return np.random.default_rng(seed).choice(np.arange(1, N_SG + 1), size=n, p=p).astype(np.int32)
    spacegroup_probs(spacegroups)  # checks the list
    return np.repeat(np.asarray(spacegroups, np.int32), n)
