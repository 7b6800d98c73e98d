"""Reward registry: a reward maps a batch of structures to an array, higher is better.

Named in config (`ppo.reward`):
- `ehull`: minus the energy above the convex hull of the structure as generated
  (MLIP single point + MP2020 corrections + hull), clipped to [-clip, clip] as the
  paper's code does; a structure that could not be decoded, has atoms closer than
  `crystalrl.structures.MIN_DISTANCE` (structurally invalid), holds an element the hull reference lacks, or could
  not be scored gets the worst value, -clip, and is counted.
- `dielectric_fom`: band gap x total dielectric constant (matgl models); undecodable,
  overlapping or unscorable samples get 0 (the paper's code's dummy value).
- `diversity`: 1 / (how many samples of the batch share the sample's reduced formula); an
  undecodable sample gets 0. Pays for spreading over compositions, not for any one of them.
- `novelty`: 1 for a sample the evaluation counts novel (valid, and no crystal of the run's
  training split matches it: `crystalrl.evaluate.matching.NoveltyIndex` with `evaluate.matcher`
  and `evaluate.match_spacegroup`), else 0. Pays nothing for stability: a component beside `ehull`.
- `module:function`: a user's callable `f(structures: list[Structure | None]) -> array`
  (None marks a sample that could not be decoded), imported from `module`.

A run's `ppo.reward` is one name, or a mapping name -> {weight, normalize, clip}: the
weighted sum of its components (`composite_reward`), each normalised over the batch first
(none; zscore; clip to [lo, hi]), each logged per step as `reward_<name>_mean`.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from crystalrl.config import import_callable

if TYPE_CHECKING:  # the workflow's parse imports this module: pymatgen loads in the rewards only
    from pymatgen.core import Structure


@dataclass
class RewardResult:
    """Rewards (n,), a validity mask, per-sample extras for logging (e.g. e_hull), and the
    samples that abstain (zero advantage, outside the baseline: `crystalrl.rl.guards`)."""

    reward: np.ndarray
    valid: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    abstain: np.ndarray | None = None


RewardFn = Callable[[Sequence["Structure | None"]], RewardResult]


def ehull_reward(mlip, hull, *, clip: float) -> RewardFn:
    """-e_hull (eV/atom) as generated (`crystalrl.ehull`), clipped to [-clip, clip];
    samples that cannot be scored get -clip."""

    def reward(structures):
        from crystalrl.ehull import e_hull_as_generated

        e_hull, _status = e_hull_as_generated(structures, mlip, hull)
        valid = np.isfinite(e_hull)
        r = np.where(valid, -np.clip(np.nan_to_num(e_hull, nan=clip), -clip, clip), -clip)
        return RewardResult(reward=r, valid=valid, extras={"e_hull": e_hull})

    return reward


def dielectric_fom_reward(predictor, *, dummy: float = 0.0, batch_size: int = 64) -> RewardFn:
    """Band gap x dielectric constant; samples that fail get `dummy` (the paper's code: 0)."""

    def reward(structures):
        n = len(structures)
        # overlapping atoms (< MIN_DISTANCE) have no meaningful band gap or dielectric response
        from crystalrl.evaluate.validity import structure_validity

        idx = np.flatnonzero([s is not None and structure_validity(s)[0] for s in structures])
        fom, gap, eps = (np.full(n, np.nan) for _ in range(3))
        if idx.size:
            pred = predictor.predict([structures[i] for i in idx], batch_size=batch_size)
            fom[idx], gap[idx], eps[idx] = pred["fom"], pred["band_gap"], pred["eps"]
        valid = np.isfinite(fom)
        return RewardResult(reward=np.where(valid, fom, dummy), valid=valid,
                            extras={"fom": fom, "band_gap": gap, "eps": eps})

    return reward


def user_reward(spec: str) -> RewardFn:
    """Import `module:function`; its output is coerced to a float array of the batch size."""
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise ValueError(f"config key 'ppo.reward': '{spec}' is neither a known reward "
                         f"({', '.join(REWARDS)}) nor of the form module:function")
    func = import_callable(spec, "ppo.reward")

    def reward(structures):
        r = np.asarray(func(list(structures)), dtype=np.float64)
        if r.shape != (len(structures),):
            raise ValueError(f"reward '{spec}' returned shape {r.shape} for {len(structures)} structures")
        valid = np.isfinite(r) & np.array([s is not None for s in structures])
        worst = np.nanmin(r[valid]) if valid.any() else 0.0
        return RewardResult(reward=np.where(valid, r, worst), valid=valid)

    return reward


#: The `evaluate` keys the novelty reward judges by, so that it pays for exactly the samples
#: the evaluation will count novel (the workflow passes them as the ppo job's `novelty` params).
NOVELTY_SETTINGS = ("matcher", "match_spacegroup", "min_distance", "min_volume", "oxidation_states_set")


def novelty_reward(index, settings: Mapping[str, Any] | None = None) -> RewardFn:
    """1 where a sample is valid (structure and SMACT composition, by the `evaluate` thresholds
    in `settings`) and `index` (a `NoveltyIndex` of the training split) holds no match, else 0:
    the evaluation's own `novel`. Invalid samples are 0 without a search: an overlapping or
    uncharged crystal is trivially novel, and paying for it would be a hack. Only a sample that
    did not decode is not valid."""
    cfg = dict(settings or {})

    def reward(structures):
        from crystalrl.evaluate import validity as v

        cutoff, min_volume = cfg.get("min_distance", v.MIN_DISTANCE), cfg.get("min_volume", v.MIN_VOLUME)
        ox = cfg.get("oxidation_states_set", v.OXIDATION_STATES_SET)
        idx = [i for i, s in enumerate(structures) if s is not None and v.structure_validity(s, cutoff, min_volume)[0]
               and v.composition_validity(s.composition, ox)[0]]
        r = np.zeros(len(structures))
        if idx:
            r[idx] = index.is_novel([structures[i] for i in idx])
        return RewardResult(reward=r, valid=np.array([s is not None for s in structures]))

    return reward


def diversity_reward() -> RewardFn:
    """1 / (samples of the batch with the same reduced formula); 0 where a sample did not decode."""

    def reward(structures):
        formulas = [None if s is None else s.composition.reduced_formula for s in structures]
        counts = Counter(f for f in formulas if f is not None)
        r = np.array([0.0 if f is None else 1.0 / counts[f] for f in formulas])
        return RewardResult(reward=r, valid=np.array([f is not None for f in formulas]))

    return reward


@dataclass(frozen=True)
class Builtin:
    """A built-in reward: what the caller must load for it (`needs`: of "mlip", "hull",
    "dielectric", "train": the training split) and how it is built from those (`build`,
    keywords of `make_reward`)."""

    needs: tuple[str, ...]
    build: Callable[..., RewardFn]


def _build_fom(*, dielectric_dirs=None, batch_size: int, **_) -> RewardFn:
    from crystalrl.dielectric import DielectricPredictor

    if not dielectric_dirs:
        raise ValueError("reward 'dielectric_fom' needs the trained dielectric models (rule train_dielectric)")
    return dielectric_fom_reward(DielectricPredictor(*dielectric_dirs), batch_size=batch_size)


def _build_ehull(*, mlip=None, hull=None, clip=None, **_) -> RewardFn:
    if mlip is None or hull is None or clip is None:
        raise ValueError("reward 'ehull' needs an MLIP, a hull reference and its clip")
    return ehull_reward(mlip, hull, clip=clip)


def _build_novelty(*, novelty=None, **_) -> RewardFn:
    if novelty is None:
        raise ValueError("reward 'novelty' needs a NoveltyIndex of the training split and the evaluate settings")
    index, settings = novelty
    return novelty_reward(index, settings)


#: The one registry of reward names: the config check, the workflow's inputs, the PPO
#: stage and `make_reward` all ask it, never compare names themselves.
REWARDS: dict[str, Builtin] = {
    "ehull": Builtin(("mlip", "hull"), _build_ehull),
    "dielectric_fom": Builtin(("dielectric",), _build_fom),
    "diversity": Builtin((), lambda **_: diversity_reward()),
    "novelty": Builtin(("train",), _build_novelty),
}


def reward_needs(spec: str | Mapping[str, Mapping[str, Any]], what: str) -> bool:
    """Whether a run's `ppo.reward` (a name or a mapping of components) needs `what`
    ("mlip", "hull", "dielectric" or "train") loaded or built first."""
    return any(what in REWARDS[name].needs for name in reward_components(spec) if name in REWARDS)


def reward_components(spec: str | Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """name -> {weight, normalize, clip} of a run's `ppo.reward` (validated: the schema filled
    the defaults); a single name is that reward at weight 1, not normalised."""
    if isinstance(spec, str):
        return {spec: dict(weight=1.0, normalize="none", clip=None)}
    return {name: dict(part) for name, part in spec.items()}


def column_name(component: str) -> str:
    """A metrics column for a component (`reward_<name>`): a module:function spec made a word."""
    return "reward_" + re.sub(r"\W+", "_", component).strip("_")


def _normalized(r: np.ndarray, how: str, bounds) -> np.ndarray:
    if how == "zscore":
        return (r - r.mean()) / (r.std() + 1e-8)
    if how == "clip":
        return np.clip(r, *bounds)
    return r


def composite_reward(parts: Mapping[str, tuple[RewardFn, Mapping[str, Any]]]) -> RewardFn:
    """sum_k w_k * normalize_k(r_k) over the components `parts` (name -> (reward, settings)).

    A sample is valid when every component scored it, and abstains when any component says so;
    each component's raw reward is kept as the extra `reward_<name>`, beside its own extras.
    """

    def reward(structures):
        n = len(structures)
        total, valid, extras, abstain = np.zeros(n), np.ones(n, bool), {}, None
        for name, (fn, part) in parts.items():
            rr = fn(structures)
            r = np.asarray(rr.reward, np.float64)
            total += part["weight"] * _normalized(r, part["normalize"], part.get("clip"))
            valid &= np.asarray(rr.valid, bool)
            extras.update(rr.extras)
            extras[column_name(name)] = r
            if rr.abstain is not None:
                abstain = np.asarray(rr.abstain, bool) | (False if abstain is None else abstain)
        return RewardResult(reward=total, valid=valid, extras=extras, abstain=abstain)

    return reward


def make_reward(name: str, *, mlip=None, hull=None, dielectric_dirs: tuple[str, str] | None = None,
                clip: float | None = None, batch_size: int = 64, novelty=None) -> RewardFn:
    """The reward named in config (`ppo.reward`), from models loaded once by the caller:
    `mlip` (which carries its batch size), `hull` and `clip` (`ppo.ehull_clip`) for `ehull`;
    the trained dielectric model directories and `batch_size` for `dielectric_fom`;
    `novelty` = (a `NoveltyIndex` of the training split, the `NOVELTY_SETTINGS` of `evaluate`)
    for `novelty`; a `module:function` needs nothing."""
    if name in REWARDS:
        return REWARDS[name].build(mlip=mlip, hull=hull, dielectric_dirs=dielectric_dirs, clip=clip,
                                   batch_size=batch_size, novelty=novelty)
    return user_reward(name)
