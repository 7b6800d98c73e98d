"""Reward registry: a reward maps a batch of structures to an array, higher is better.

Named in config (`ppo.reward`):
- `ehull`: minus the energy above the convex hull of the structure as generated
  (MLIP single point + MP2020 corrections + hull), clipped to [-clip, clip] as the
  paper's code does; a structure that could not be decoded, has atoms closer than
  0.5 A (structurally invalid), holds an element the hull reference lacks, or could
  not be scored gets the worst value, -clip, and is counted.
- `dielectric_fom`: band gap x total dielectric constant (matgl models); undecodable,
  overlapping or unscorable samples get 0 (the paper's code's dummy value).
- `module:function`: a user's callable `f(structures: list[Structure | None]) -> array`
  (None marks a sample that could not be decoded), imported from `module`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from pymatgen.core import Structure

from crystalrl.evaluate.validity import structure_validity


@dataclass
class RewardResult:
    """Rewards (n,), a validity mask, and per-sample extras for logging (e.g. e_hull)."""

    reward: np.ndarray
    valid: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)


RewardFn = Callable[[Sequence[Structure | None]], RewardResult]


def ehull_reward(mlip, hull, *, clip: float = 10.0, batch_size: int = 64) -> RewardFn:
    """-e_hull (eV/atom), clipped to [-clip, clip]; undecodable or failed samples get -clip."""

    def reward(structures):
        n = len(structures)
        # Overlapping atoms (< 0.5 A) make MLIP energies meaningless and their neighbour
        # lists explode (minutes per structure): they get the worst reward unscored.
        # Elements without a hull reference cannot get an e_hull (NaN) whatever the MLIP says,
        # and some (Z > 94 for CHGNet) break its batching: skip the MLIP for them too.
        covered = getattr(hull, "elements", None)
        ok = np.array([s is not None and structure_validity(s)[0]
                       and (covered is None or {el.symbol for el in s.composition} <= covered)
                       for s in structures])
        e_hull = np.full(n, np.nan)
        idx = np.flatnonzero(ok)
        if idx.size:
            subset = [structures[i] for i in idx]
            energies = mlip.predict(subset, batch_size=batch_size, properties=("energy",))["energy"]
            # CHGNet is trained on MP2020-corrected energies: correcting again would bias e_hull low
            e, _status = hull.e_above_hull((subset, energies),
                                           apply_mp2020=not getattr(mlip, "mp2020_corrected", False))
            e_hull[idx] = e
        valid = np.isfinite(e_hull)
        r = np.where(valid, -np.clip(np.nan_to_num(e_hull, nan=clip), -clip, clip), -clip)
        return RewardResult(reward=r, valid=valid, extras={"e_hull": e_hull})

    return reward


def dielectric_fom_reward(predictor, *, dummy: float = 0.0, batch_size: int = 64) -> RewardFn:
    """Band gap x dielectric constant; samples that fail get `dummy` (the paper's code: 0)."""

    def reward(structures):
        n = len(structures)
        # overlapping atoms (< 0.5 A) have no meaningful band gap or dielectric response
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
                         f"({', '.join(KNOWN)}) nor of the form module:function")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"config key 'ppo.reward': cannot import '{spec}': {e}") from e

    def reward(structures):
        r = np.asarray(func(list(structures)), dtype=np.float64)
        if r.shape != (len(structures),):
            raise ValueError(f"reward '{spec}' returned shape {r.shape} for {len(structures)} structures")
        valid = np.isfinite(r) & np.array([s is not None for s in structures])
        worst = np.nanmin(r[valid]) if valid.any() else 0.0
        return RewardResult(reward=np.where(valid, r, worst), valid=valid)

    return reward


KNOWN = ("ehull", "dielectric_fom")


def make_reward(name: str, *, mlip_cfg: dict[str, Any] | None = None, hull_cfg: dict[str, Any] | None = None,
                dielectric_dirs: tuple[str, str] | None = None, clip: float = 10.0) -> RewardFn:
    """Build the reward named in config; heavy models load once, here."""
    if name == "ehull":
        from crystalrl.hull import load_reference
        from crystalrl.mlip import get_mlip

        m = dict(mlip_cfg or {})
        mlip = get_mlip(m.pop("backend", "chgnet"), model=m.get("model"), weights_path=m.get("weights_path"),
                        device=m.get("device", "cpu"))
        h = hull_cfg or {}
        hull = load_reference(h.get("reference", "mp_bundled"), elemental_entries=h.get("elemental_entries"))
        return ehull_reward(mlip, hull, clip=clip, batch_size=m.get("batch_size", 64))
    if name == "dielectric_fom":
        from crystalrl.dielectric import DielectricPredictor

        if not dielectric_dirs:
            raise ValueError("reward 'dielectric_fom' needs the trained dielectric models (rule train_dielectric)")
        return dielectric_fom_reward(DielectricPredictor(*dielectric_dirs))
    return user_reward(name)
