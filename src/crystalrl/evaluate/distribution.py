"""How the samples are spread, against the training set: LeMat-GenBench's distribution and
diversity families, on what the eval table already holds (space group `G`, `formula`).

- Jensen-Shannon divergence (base 2, in [0, 1]; 0 = the same distribution) between the
  samples' and the training set's space-group frequencies, and between their element
  frequencies (share of each element among all atoms).
- Diversity: the Shannon entropy (bits) of those frequencies, and its exponential, the
  effective number of space groups / elements (the Vendi score of a diagonal kernel:
  the "how many distinct kinds" a sample set behaves like).

Undecoded samples (no formula) count in neither; the training set's row order does not matter.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

from crystalrl.evaluate.audit import element_frequencies


def jsd(p: pd.Series, q: pd.Series) -> float:
    """Jensen-Shannon divergence (base 2) of two frequency tables over the union of their keys."""
    keys = p.index.union(q.index)
    if not len(keys) or p.sum() <= 0 or q.sum() <= 0:
        return np.nan
    a, b = p.reindex(keys, fill_value=0.0).to_numpy(float), q.reindex(keys, fill_value=0.0).to_numpy(float)
    return float(jensenshannon(a / a.sum(), b / b.sum(), base=2) ** 2)


def entropy_bits(p: pd.Series) -> float:
    """Shannon entropy (bits) of a frequency table."""
    x = p.to_numpy(float)
    x = x[x > 0] / x.sum() if x.sum() > 0 else x[:0]
    return float(-(x * np.log2(x)).sum()) if len(x) else np.nan


def spacegroup_frequencies(groups: Sequence[int]) -> pd.Series:
    s = pd.Series(groups).dropna().astype(int)
    return s.value_counts(normalize=True).sort_index()


def distribution_table(evals: Mapping[str, pd.DataFrame], train: pd.DataFrame) -> pd.DataFrame:
    """One row per model of its evaluated samples (`G`, `formula`) against `train` (`spacegroup`,
    `formula`): jsd_spacegroup, jsd_elements, spacegroup_entropy_bits, element_entropy_bits and
    the effective numbers of space groups and elements (2 ** entropy)."""
    sg_ref = spacegroup_frequencies(train["spacegroup"])
    el_ref = element_frequencies(train["formula"].tolist())
    rows = []
    for model, ev in evals.items():
        decoded = ev[ev["formula"].notna()]
        sg = spacegroup_frequencies(decoded["G"])
        el = element_frequencies(decoded["formula"].tolist())
        h_sg, h_el = entropy_bits(sg), entropy_bits(el)
        rows.append(dict(model=model, n_decoded=len(decoded), jsd_spacegroup=jsd(sg, sg_ref),
                         jsd_elements=jsd(el, el_ref), spacegroup_entropy_bits=h_sg, element_entropy_bits=h_el,
                         effective_spacegroups=2 ** h_sg, effective_elements=2 ** h_el))
    return pd.DataFrame(rows)
