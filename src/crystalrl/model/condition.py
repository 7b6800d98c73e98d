"""Conditioned generation: the elements a sample may hold, favours and must contain.

- `elements` (a whitelist, i.e. a chemical system to stay inside): every other element is
  masked out of each atom draw, so no sample leaves it (MatterGen users report leaks).
- `composition_bias` (symbol -> logit): added to that element's log-probability at each
  atom draw, as CrystalFormer PR #14's soft bias; > 0 favours it, < 0 disfavours it.
- `require_elements` (PPO only): a sample lacking one of them gets the batch's worst reward.
  The sampler cannot force a composition; the reward teaches it.
- a `crystalrl.model.prototype.Prototype` (a named generation, config `generate.<name>`): one space group, a fixed
  Wyckoff letter per site, the elements each site may hold, and sites that must hold the
  same element, as the public code's `--wyckoff` and `atoms.json` (`atom_mask` per site,
  `constraints`). Sites past the list are the pad: the crystal has exactly those sites.

Masks and biases steer the draw only. The log-probability a sample carries, and that PPO's
ratio and KL use, is the model's own (unmasked, unbiased): PPO then raises the model's own
probability of what scored well inside the constraint, and the ratio compares the same
quantity before and after an update (`tests/test_condition.py`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from crystalrl.model.sampler import element_mask


def atom_mask(elements: Sequence[str] | None, cfg) -> np.ndarray | None:
    """(atom_types,) bool of the allowed elements, or None (all)."""
    return None if not elements else element_mask(elements, cfg)


def atom_bias(composition_bias: Mapping[str, float] | None, cfg) -> np.ndarray | None:
    """(atom_types,) float logit bias per element, or None (no bias)."""
    if not composition_bias:
        return None
    bias = np.zeros(cfg.atom_types, np.float32)
    for el, b in composition_bias.items():
        bias[element_mask([el], cfg)] = float(b)
    return bias


def lacks_required(structures, required: Sequence[str]) -> np.ndarray:
    """(n,) bool: the sample did not decode or misses one of the `required` element symbols."""
    need = set(required)
    return np.array([s is None or not need <= {el.symbol for el in s.composition} for s in structures], bool)

