"""Per-sample evaluation (valid, stable, unique, novel, S.U.N.) and the S.U.N. table.

Definitions (paper, Sec. 3; MatterGen's S.U.N.):
- valid = structurally valid (distances >= `crystalrl.structures.MIN_DISTANCE`, volume >= 0.1 A^3) and
  compositionally valid (SMACT), see `validity.py`.
- stable = e_hull < `stable_threshold` (0.1 eV/atom), e_hull of the sample as
  generated (MLIP single point, no relaxation, as the paper). NaN e_hull -> not stable.
- unique: among the *valid* samples of one model, in sample order, no earlier valid
  sample matches (StructureMatcher); the first of a set of duplicates is unique.
- novel: a valid sample that matches no structure of the training split.
- An invalid sample is neither unique nor novel, so S.U.N. = valid & stable & unique & novel.

After relaxation (LeMat-GenBench, 2026; `relaxed.py`), with e_hull_relaxed of the sample
relaxed by the same MLIP on the same hull:
- SUN = valid & unique & novel & e_hull_relaxed <= `sun_threshold` (0 eV/atom);
- MSUN = valid & unique & novel & sun_threshold < e_hull_relaxed <= `msun_threshold` (0.1):
  metastable, so SUN and MSUN are disjoint, as LeMat-GenBench counts them.
Uniqueness and novelty stay those of the generated structures: relaxation moves atoms by
far less than StructureMatcher's tolerances for most samples, and one matching pass serves
all three metrics (a sample whose relaxation changes its match is the rare exception).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from crystalrl.config import SectionConfig
from crystalrl.evaluate.matching import NoveltyIndex, unique_mask
from crystalrl.evaluate.validity import STRICT_COLUMNS, validity_table
from crystalrl.structures import parse_many

METRICS = ("valid", "stable", "unique", "novel", "sun")
#: Counted beside METRICS where the eval table has them (`valid_strict`: LeMat-GenBench's checks too).
VALIDITY = ("valid_struct", "valid_comp", "valid_strict")
#: LeMat-GenBench's SUN and MSUN after relaxation, counted where the eval table has them.
RELAXED = ("sun_relaxed", "msun_relaxed")


def _counted(df: pd.DataFrame) -> tuple[str, ...]:
    return tuple(m for m in VALIDITY if m in df) + METRICS + tuple(m for m in RELAXED if m in df)


@dataclass(frozen=True)
class EvaluateConfig(SectionConfig):
    """How samples are judged: config section `evaluate` (defaults in the schema)."""

    SECTION = "evaluate"
    OTHER_KEYS = ("models",)  # which models to evaluate, not how

    stable_threshold: float
    match_spacegroup: bool
    min_distance: float
    min_volume: float
    oxidation_states_set: str
    strict: dict
    matcher: dict
    relax: dict
    sun_threshold: float
    msun_threshold: float
    cross_check_mlip: dict | None
    cross_check_tolerance: float


def evaluate_samples(samples_df: pd.DataFrame, *, e_hull: Sequence[float], config: EvaluateConfig,
                     train_df: pd.DataFrame | None = None,
                     structures: Sequence[Structure | None] | None = None,
                     validity: pd.DataFrame | None = None,
                     novelty_index: NoveltyIndex | None = None, processes: int = 1) -> pd.DataFrame:
    """Per-sample table: `sample_id, G, seconds, formula, n_atoms, valid_struct, valid_comp,
    valid, valid_radii, valid_density, valid_lattice, valid_strict, e_hull, stable, unique, novel, sun, reason` (G/seconds copied when present).

    `samples_df` needs `cif` (null where decoding failed); `e_hull` (n,) in eV/atom
    (NaN where unknown); `train_df` (`cif`, `formula`, `spacegroup`) or a prebuilt
    `novelty_index`; `structures` skips re-parsing the CIFs and `validity` (a
    `validity_table` of them) recomputing validity.
    """
    cfg = config
    n = len(samples_df)
    e_hull = np.asarray(e_hull, dtype=float)
    if e_hull.shape != (n,):
        raise ValueError(f"e_hull has shape {e_hull.shape}, expected ({n},) like the samples table")
    ids = samples_df["sample_id"].tolist() if "sample_id" in samples_df else list(range(n))
    if structures is None:
        if "cif" not in samples_df:
            raise KeyError(f"samples table needs a 'cif' column; it has {list(samples_df.columns)}")
        structures, parse_why = parse_many(samples_df["cif"].tolist(), ids)
    else:
        parse_why = [None if s is not None else f"sample {ids[i]!r}: no structure" for i, s in enumerate(structures)]
    if len(structures) != n:
        raise ValueError(f"{len(structures)} structures for {n} sample rows")

    out = pd.DataFrame({"sample_id": ids})
    for col in ("G", "seconds"):
        if col in samples_df:
            out[col] = samples_df[col].to_numpy()
    out["formula"] = [s.composition.reduced_formula if s is not None else None for s in structures]
    out["n_atoms"] = [len(s) if s is not None else 0 for s in structures]
    val = validity if validity is not None else \
        validity_table(structures, cfg.min_distance, cfg.min_volume, cfg.oxidation_states_set, cfg.strict)
    for col in ("valid_struct", "valid_comp", "valid", *STRICT_COLUMNS, "valid_strict"):
        out[col] = val[col].to_numpy()
    out["e_hull"] = e_hull
    out["stable"] = np.nan_to_num(e_hull, nan=np.inf) < float(cfg.stable_threshold)

    valid_idx = np.flatnonzero(out["valid"].to_numpy())
    valid_structs = [structures[i] for i in valid_idx]
    unique = np.zeros(n, dtype=bool)
    novel = np.zeros(n, dtype=bool)
    if len(valid_idx):
        unique[valid_idx] = unique_mask(valid_structs, cfg.matcher, cfg.match_spacegroup,
                                        processes=processes)
        if novelty_index is None:
            if train_df is None:
                raise ValueError("evaluate_samples needs train_df or novelty_index to decide novelty")
            novelty_index = NoveltyIndex(train_df, cfg.matcher, cfg.match_spacegroup)
        novel[valid_idx] = novelty_index.is_novel(valid_structs, processes=processes)
    out["unique"] = unique
    out["novel"] = novel
    out["sun"] = out["valid"] & out["stable"] & out["unique"] & out["novel"]
    out["reason"] = ["; ".join(r for r in (p, v) if r) for p, v in zip(parse_why, val["validity_reason"])]
    return out


def _seconds_per_row(df: pd.DataFrame, model: str, seconds: Mapping[str, float] | None) -> np.ndarray:
    """Sampling seconds attributed to each sample: its own `seconds` or the model total shared evenly."""
    if seconds is not None and model in seconds:
        return np.full(len(df), float(seconds[model]) / max(len(df), 1))
    if "seconds" in df:
        return df["seconds"].astype(float).to_numpy()
    return np.full(len(df), np.nan)


def _counts(df: pd.DataFrame, secs: np.ndarray) -> dict:
    row = {"n": len(df)}
    for m in _counted(df):
        row[f"n_{m}"] = int(df[m].sum())
    row["seconds"] = float(np.sum(secs)) if len(secs) else 0.0
    return row


def _rates(row: dict) -> dict:
    n = row["n"]
    for m in [k[2:] for k in list(row) if k.startswith("n_")]:
        row[f"{m}_rate"] = row[f"n_{m}"] / n if n else np.nan
    row["sun_per_second"] = row["n_sun"] / row["seconds"] if row["seconds"] > 0 else np.nan
    return row


def sun_table(eval_dfs: Mapping[str, pd.DataFrame], seconds: Mapping[str, float] | None = None,
              sg_weights: Mapping[int, float] | None = None, group_col: str = "G",
              per_spacegroup: bool = True) -> pd.DataFrame:
    """One row per (model, space group) and a total row per model (`spacegroup == "total"`).

    Columns: `model, spacegroup (int, or "total"), n, n_valid_struct, n_valid_comp,
    n_valid_strict (where the eval tables have it), n_valid, n_stable, n_unique, n_novel, n_sun,
    n_sun_relaxed, n_msun_relaxed (where the eval tables have them), seconds, <metric>_rate (count / n),
    sun_per_second`. Sampling seconds: `seconds[model]` (the model's total wall time,
    shared evenly over its samples) when given, else the samples' `seconds` column;
    sun_per_second = n_sun / seconds.

    Total row: counts and seconds are sums over all the model's samples (so they add
    up to the space-group rows). Its rates are weighted over space groups: with
    `sg_weights=None` a group weighs its share of the model's samples, i.e. the rate
    pooled over all samples -- the paper's headline number when the space groups were
    drawn from the training distribution. With `sg_weights` (e.g. training-set
    frequencies) the total rate is sum_g w_g rate_g / sum_g w_g over the groups
    present, which re-weights runs of a fixed count per group to the training
    distribution; its sun_per_second is then sun_rate * n / seconds.
    `per_spacegroup=False` writes only the total rows.
    """
    rows = []
    for model, df in eval_dfs.items():
        if group_col not in df:
            raise KeyError(f"eval table of model {model!r} has no {group_col!r} column")
        secs = _seconds_per_row(df, model, seconds)
        g = df[group_col].astype(int).to_numpy()
        per_g = [_rates({"model": model, "spacegroup": int(sg), **_counts(df[g == sg], secs[g == sg])})
                 for sg in np.unique(g)]
        total = _rates({"model": model, "spacegroup": "total", **_counts(df, secs)})
        if sg_weights is not None and per_g:
            w = np.array([float(sg_weights.get(r["spacegroup"], 0.0)) for r in per_g])
            if w.sum() <= 0:
                raise ValueError(f"sg_weights give zero weight to every space group of model {model!r}")
            for m in _counted(df):
                total[f"{m}_rate"] = float(np.dot(w, [r[f"{m}_rate"] for r in per_g]) / w.sum())
            total["sun_per_second"] = (total["sun_rate"] * total["n"] / total["seconds"]
                                       if total["seconds"] > 0 else np.nan)
        rows.extend((per_g if per_spacegroup else []) + [total])
    return pd.DataFrame(rows)
