"""The paper's tables as CSV and Markdown, from the per-sample evaluation tables."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from crystalrl.io import write_text_atomic

RATES = ("valid", "stable", "unique", "novel", "sun")


def overall(evals: dict[str, pd.DataFrame], seconds: dict[str, float] | None = None) -> pd.DataFrame:
    """Per model: n and the fractions valid / stable / unique / novel / S.U.N., S.U.N. per second.

    Rates are over all samples (the paper's 44.7% -> 73.4% stable, 15.3% -> 21.6% S.U.N.),
    computed on samples whose space groups follow the training distribution.
    """
    rows = []
    for model, df in evals.items():
        n = len(df)
        row = {"model": model, "n": n}
        for r in RATES:
            row[f"{r}_rate"] = float(df[r].mean()) if n else np.nan
        row["mean_e_hull"] = float(np.nanmean(df["e_hull"])) if n and np.isfinite(df["e_hull"]).any() else np.nan
        secs = (seconds or {}).get(model)
        if secs is None and "seconds" in df:
            secs = float(df["seconds"].sum())
        row["sampling_seconds"] = secs
        row["sun_per_second"] = float(df["sun"].sum()) / secs if secs else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def validity(evals: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Structural, compositional and overall validity per model (paper Appendix B: CDVAE's
    definitions), then LeMat-GenBench's stricter checks where the eval tables have them:
    radius-based distances, density, cell lengths, and `strict` (overall and all three)."""
    strict = {"radius_distance": "valid_radii", "density": "valid_density", "lattice": "valid_lattice",
              "strict": "valid_strict"}
    return pd.DataFrame([{"model": m, "n": len(df), "structural": float(df["valid_struct"].mean()),
                          "compositional": float(df["valid_comp"].mean()), "overall": float(df["valid"].mean()),
                          **{k: float(df[c].mean()) for k, c in strict.items() if c in df}}
                         for m, df in evals.items()])


def dielectric_candidates(preds: pd.DataFrame, *, e_hull_max: float = 0.1, gap_min: float = 0.0,
                          top: int = 30) -> pd.DataFrame:
    """Top FoM samples that are stable (paper Appendix E), traceable to their crystal: model,
    sample_id, formula, space group, gap, eps, FoM, e_hull, in_training_set (not novel against
    the training split) and the sample's `cif` where the predictions carry them."""
    d = preds[(preds["e_hull"] < e_hull_max) & (preds["band_gap"] > gap_min) & np.isfinite(preds["fom"])]
    d = d.sort_values("fom", ascending=False).drop_duplicates("formula").head(top)
    cols = [c for c in ("model", "sample_id", "formula", "spacegroup", "band_gap", "eps", "fom", "e_hull", "novel",
                        "cif") if c in d]
    out = d[cols].reset_index(drop=True)
    if "novel" in out:
        out.insert(out.columns.get_loc("novel"), "in_training_set", ~out.pop("novel").astype(bool))
    return out


def write_table(df: pd.DataFrame, stem: str | Path, *, floatfmt: str = ".3f") -> list[Path]:
    """Write `stem`.csv and `stem`.md (a GitHub Markdown table); returns both paths."""
    stem = Path(stem)
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    write_text_atomic(df.to_csv(index=False), csv)
    write_text_atomic(_markdown(df, floatfmt) + "\n", md)
    return [csv, md]


def _markdown(df: pd.DataFrame, floatfmt: str) -> str:
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])
