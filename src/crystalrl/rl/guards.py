"""Guards against reward hacking: the one place a reward's batch is corrected before RL sees it.

A policy finds the cheapest way to a high reward. Each guard closes one way seen in
practice (OMatGRPO's guards; this project's demo, whose unguarded PPO made 75% single-element
crystals against 28% for its base model). Config `ppo.guards`, per run `ppo_runs.<name>.guards`:

- `ehull_floor` (0 eV/atom): e_hull below it counts as it. An MLIP energy below the hull is
  mostly the MLIP's error, so going further below must not pay.
- `below_hull` (-0.1 eV/atom) with `below_hull_action` (penalty): a sample this far below the
  hull gets the worst reward (-ehull_clip), or abstains. Far below a DFT hull is an MLIP artefact.
- `sparse_hull_min_compounds` (1): a multi-element sample whose chemical system has fewer
  compound entries in the hull reference abstains. Against elements alone every compound with
  a negative formation energy looks stable.
- `single_element` (abstain): a one-element sample abstains, or with `penalty` gets the worst
  reward. Elements are the hull's own reference points: near them e_hull is low without chemistry.
- `repeat_discount` (0.5): the k-th repeat of a reduced composition in the batch keeps
  discount**k of its reward's margin above the batch's worst: collapsing onto one
  composition pays less.

An abstaining sample gets zero advantage and stays out of the reward baseline (`crystalrl.rl.ppo`).
The first three need an e_hull (the `ehull` reward); the last two apply to any reward. Each guard's
share of the batch is logged per step as `guard_<name>_mean`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from crystalrl.config import section
from crystalrl.rewards import RewardFn, RewardResult

GUARDS = ("floor", "below_hull", "sparse_hull", "single_element", "repeat")


@dataclass(frozen=True)
class Guards:
    """Settings of `ppo.guards` (defaults in the schema; `enabled: false` is the paper's PPO)."""

    enabled: bool
    ehull_floor: float | None
    below_hull: float | None
    below_hull_action: str
    sparse_hull_min_compounds: int
    single_element: str
    repeat_discount: float

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "Guards":
        full = section("ppo", {"guards": dict(values or {})})["guards"]
        return cls(**full)


def guarded(reward_fn: RewardFn, guards: Guards, *, hull=None, clip: float | None = None,
            parts: tuple[str, ...] = ("ehull", "composition")) -> RewardFn:
    """`reward_fn` with `guards` applied to each batch; `reward_fn` itself when they are off.

    `hull` (a `HullReference`) and `clip` (`ppo.ehull_clip`) are needed by the e_hull guards,
    which act only when the reward reports an `e_hull` extra. `parts`: as `apply_guards`.
    """
    if not guards.enabled:
        return reward_fn

    def reward(structures):
        rr = reward_fn(structures)
        return apply_guards(structures, rr, guards, hull=hull, clip=clip, parts=parts)

    return reward


def apply_guards(structures, rr: RewardResult, g: Guards, *, hull=None, clip: float | None = None,
                 parts: tuple[str, ...] = ("ehull", "composition")) -> RewardResult:
    """The guarded copy of `rr` for the batch `structures` (None where a sample did not decode).

    `parts`: "ehull" (floor, below-hull, sparse hull: on an e_hull reward before it is weighted
    into a composite) and "composition" (single element, repeats: on the reward PPO sees).
    """
    n = len(structures)
    r = np.asarray(rr.reward, np.float64).copy()
    abstain = np.zeros(n, bool) if rr.abstain is None else np.asarray(rr.abstain, bool).copy()
    hit = {name: np.zeros(n, bool) for name in GUARDS}
    elements = [None if s is None else sorted({el.symbol for el in s.composition}) for s in structures]
    e_hull = rr.extras.get("e_hull") if "ehull" in parts else None
    if e_hull is not None and clip is not None:
        e = np.asarray(e_hull, np.float64)
        scored = np.isfinite(e)
        if g.ehull_floor is not None:
            hit["floor"] = scored & (e < g.ehull_floor)
            r[hit["floor"]] = -np.clip(g.ehull_floor, -clip, clip)
        if g.below_hull is not None:
            hit["below_hull"] = scored & (e < g.below_hull)
            if g.below_hull_action == "penalty":
                r[hit["below_hull"]] = -clip
            else:
                abstain |= hit["below_hull"]
        if g.sparse_hull_min_compounds > 0 and hull is not None:
            hit["sparse_hull"] = np.array([bool(ok) and len(els) > 1 and hull.n_compounds(els) < g.sparse_hull_min_compounds
                                           for ok, els in zip(scored, elements)], bool)
            abstain |= hit["sparse_hull"]
    if "composition" in parts and g.single_element != "off":
        hit["single_element"] = np.array([els is not None and len(els) == 1 for els in elements], bool)
        if g.single_element == "penalty":
            r[hit["single_element"]] = -clip if clip is not None else np.min(r)
        else:
            abstain |= hit["single_element"]
    if "composition" in parts and g.repeat_discount < 1:
        worst = np.min(r) if n else 0.0
        seen: Counter = Counter()
        for i, s in enumerate(structures):
            if s is None:
                continue
            k = seen[s.composition.reduced_formula]
            seen[s.composition.reduced_formula] += 1
            if k:
                hit["repeat"][i] = True
                r[i] = worst + g.repeat_discount ** k * (r[i] - worst)
    extras = dict(rr.extras, abstain=abstain.astype(np.float64))
    extras.update({f"guard_{name}": np.maximum(m, extras.get(f"guard_{name}", 0)).astype(np.float64)
                   for name, m in hit.items()})  # a composite's ehull part counted its own hits
    return RewardResult(reward=r, valid=rr.valid, extras=extras, abstain=abstain)
