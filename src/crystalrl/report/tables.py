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


def stability(evals: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per model, the paper's S.U.N. (as generated) beside LeMat-GenBench's SUN and MSUN (relaxed),
    how the relaxations went, and the second MLIP's agreement (definitions: `stability_definitions`)."""
    rows = []
    for model, df in evals.items():
        n = len(df)
        row = {"model": model, "n": n, "sun_rate": float(df["sun"].mean()) if n else np.nan}
        if "e_hull_relaxed" in df:
            relaxed = np.isfinite(df["e_hull_relaxed"].to_numpy(dtype=float))
            row.update(sun_relaxed_rate=float(df["sun_relaxed"].mean()) if n else np.nan,
                       msun_relaxed_rate=float(df["msun_relaxed"].mean()) if n else np.nan,
                       n_relaxed=int(relaxed.sum()), n_converged=int(df["relax_converged"].sum()),
                       median_rmsd_relax=float(np.nanmedian(df["rmsd_relax"])) if
                       np.isfinite(df["rmsd_relax"].to_numpy(dtype=float)).any() else np.nan)
        if "e_hull_check" in df:
            from crystalrl.evaluate.relaxed import check_agreement

            n_checked, agree, flagged = check_agreement(df)
            row.update(n_cross_checked=n_checked, cross_check_agree_rate=agree, n_cross_check_flagged=flagged)
        rows.append(row)
    return pd.DataFrame(rows)


def energy_source(mlip: dict, hull: dict) -> str:
    """Where an e_hull comes from, in words: the MLIP, the MP2020 correction and the hull reference."""
    corrected = {True: "its energies taken as MP2020-corrected", False: "MP2020 corrections applied"}.get(
        mlip.get("mp2020_corrected"), "MP2020 corrections applied where its energies lack them (CHGNet's carry them)")
    return f"MLIP {mlip['backend']} {mlip.get('model') or '(default model)'}, {corrected}, " \
           f"convex hull of {hull['reference']}"


def stability_definitions(evaluate: dict, mlip: dict, hull: dict) -> pd.DataFrame:
    """A row per column of the `stability` table that needs one: what it counts and whose energies."""
    src = energy_source(mlip, hull)
    check = evaluate.get("cross_check_mlip")
    rows = [("sun_rate", f"the paper's S.U.N.: valid, unique, novel and e_hull < {evaluate['stable_threshold']} "
                         f"eV/atom as generated (an MLIP single point, no relaxation); {src}"),
            ("sun_relaxed_rate", f"LeMat-GenBench's SUN: valid, unique, novel (judged as generated) and e_hull <= "
                                 f"{evaluate['sun_threshold']} eV/atom after relaxation (FIRE, fmax "
                                 f"{evaluate['relax']['fmax']} eV/A, at most {evaluate['relax']['max_steps']} "
                                 f"steps); {src}"),
            ("msun_relaxed_rate", f"LeMat-GenBench's MSUN: as SUN with {evaluate['sun_threshold']} < e_hull <= "
                                  f"{evaluate['msun_threshold']} eV/atom after relaxation (metastable; disjoint "
                                  f"from SUN); {src}"),
            ("median_rmsd_relax", "StructureMatcher's RMS displacement, as generated -> relaxed, normalised by "
                                  "(V/n)^(1/3); samples that no longer match are left out")]
    if check:
        rows.append(("cross_check_agree_rate",
                     f"rows stable (e_hull < {evaluate['stable_threshold']}) as generated or relaxed, re-scored "
                     f"by a second MLIP on the structure the first judged: the share where both agree on stable; "
                     f"flagged: they differ by more than {evaluate['cross_check_tolerance']} eV/atom; second "
                     f"{energy_source(check, hull)}"))
    return pd.DataFrame(rows, columns=["column", "definition"])


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
