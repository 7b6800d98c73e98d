"""The reward-hacking audit: the shares that show a reward being gamed, and a verdict per model.

PPO optimises a learned reward (an MLIP's e_hull), so a rising reward can be a policy finding
the reward's blind spots rather than better crystals. Watched here (OMatGRPO's list):
- single-element samples (elements are the hull's own reference points);
- e_hull < -0.1 eV/atom (far below a DFT hull: an MLIP artefact, not a discovery);
- repeated compositions (collapse onto a few formulas);
- element frequencies drifting from the training set.
The guards that act on them during PPO are in `crystalrl.rl.guards`; the per-step shares of
a run are in its metrics (`guard_<name>_mean`).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from pymatgen.core import Composition

BELOW_HULL = -0.1  # eV/atom


def audit_shares(formulas: Sequence[str | None], e_hull: Sequence[float] | None = None) -> dict[str, float]:
    """Shares among the decoded samples (formula not None/empty): single-element, repeated
    reduced formula; with e_hull (NaN where unscored), the share of scored samples below
    -0.1 eV/atom and the mean e_hull of scored multi-element samples."""
    f = [x if isinstance(x, str) and x else None for x in formulas]  # None/NaN/"": not decoded
    n_el = np.array([len(Composition(x).elements) if x else 0 for x in f])
    decoded = n_el > 0
    reduced = [Composition(x).reduced_formula for x in f if x]
    counts = Counter(reduced)
    out = dict(single_element_frac=float(np.mean(n_el[decoded] == 1)) if decoded.any() else np.nan,
               repeated_formula_frac=float(np.mean([counts[x] > 1 for x in reduced])) if reduced else np.nan)
    if e_hull is not None:
        e = np.asarray(e_hull, np.float64)
        scored = np.isfinite(e)
        out["below_hull_frac"] = float(np.mean(e[scored] < BELOW_HULL)) if scored.any() else np.nan
        multi = scored & (n_el > 1)
        out["e_hull_multi_mean"] = float(np.mean(e[multi])) if multi.any() else np.nan
    return out


def element_frequencies(formulas: Sequence[str | None]) -> pd.Series:
    """Share of each element among all atoms of the decoded samples."""
    total: Counter = Counter()
    for x in formulas:
        if isinstance(x, str) and x:
            for el, amt in Composition(x).get_el_amt_dict().items():
                total[el] += amt
    s = pd.Series(total, dtype=float)
    return s / s.sum() if len(s) else s


def audit_table(evals: Mapping[str, pd.DataFrame], train_formulas: Sequence[str], base: str = "base",
                n_drift: int = 3) -> pd.DataFrame:
    """One row per model of its evaluated samples (`formula`, `e_hull` columns): the shares,
    the largest element drifts from the training set, and a plain verdict against `base`."""
    ref = element_frequencies(train_formulas)
    rows = []
    for model, ev in evals.items():
        row = dict(model=model, n=len(ev), **audit_shares(ev["formula"].tolist(), ev["e_hull"].to_numpy()))
        drift = element_frequencies(ev["formula"].tolist()).sub(ref, fill_value=0.0)
        top = drift.reindex(drift.abs().sort_values(ascending=False).index[:n_drift])
        row["element_drift"] = ", ".join(f"{el} {100 * d:+.1f} pts" for el, d in top.items())
        row["max_element_drift"] = float(drift.abs().max()) if len(drift) else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    table["verdict"] = [verdict(r, table[table.model == base].iloc[0] if (table.model == base).any() else None)
                        for _, r in table.iterrows()]
    return table


#: An element whose share of all atoms moved this much from the training set (and twice the base
#: model's largest move) is flagged: a reward can be gamed by piling onto one element's compounds.
DRIFT_FLAG = 0.10


def verdict(row, base_row) -> str:
    """A sentence per model: what moved against the base model, and whether to inspect it."""
    if base_row is None or row["model"] == base_row["model"]:
        return "reference"
    flags = []
    for col, what in (("single_element_frac", "single-element share"), ("below_hull_frac", "share below -0.1 eV/atom"),
                      ("repeated_formula_frac", "repeated-formula share")):
        a, b = row.get(col, np.nan), base_row.get(col, np.nan)
        if np.isfinite(a) and np.isfinite(b) and a - b > 0.10 and a > 1.5 * b:
            flags.append(f"{what} {100 * b:.0f}% -> {100 * a:.0f}%")
    drift, base_drift = row.get("max_element_drift", np.nan), base_row.get("max_element_drift", np.nan)
    if np.isfinite(drift) and np.isfinite(base_drift) and drift > DRIFT_FLAG and drift > 2 * base_drift:
        top = str(row.get("element_drift", "")).split(",")[0]
        flags.append(f"element drift {top} from the training set (base's largest {100 * base_drift:.1f} pts)")
    if not flags:
        return "no sign of reward hacking against the base model"
    return "; ".join(flags) + ": inspect (docs/rl.md, guards)"
