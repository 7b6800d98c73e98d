"""Structural and compositional validity of generated crystals (CDVAE's definitions).

Structural: every interatomic distance, periodic images included, is at least
`cutoff` (`crystalrl.structures.MIN_DISTANCE`) and the cell volume is at least `min_volume` (0.1 A^3).
Compositional: SMACT charge neutrality with the Pauling electronegativity test;
a single element or an all-metal composition (alloy) counts as valid. The check
is `smact.screening.smact_validity` with the `smact14` oxidation states, i.e. the
full SMACT list that CDVAE's metric used (smact 4 defaults to a stricter ICSD24 set).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Structure

from crystalrl.structures import MIN_DISTANCE

MIN_VOLUME = 0.1  # A^3
OXIDATION_STATES_SET = "smact14"


def structure_validity(structure: Structure, cutoff: float = MIN_DISTANCE,
                       min_volume: float = MIN_VOLUME) -> tuple[bool, str]:
    """(valid, reason) for one structure; reason is '' when valid.

    Uses pymatgen's C neighbour search (`get_neighbor_list`), so a pair closer than
    `cutoff` is found among all periodic images, including an atom and its own image
    (a lattice vector shorter than `cutoff`) and two atoms at the same position.
    """
    lattice_ok = np.all(np.isfinite(structure.lattice.matrix)) and np.all(np.isfinite(structure.frac_coords))
    if not lattice_ok:
        return False, "non-finite lattice or coordinates"
    volume = structure.volume
    if not volume >= min_volume:
        return False, f"volume {volume:.3g} A^3 < {min_volume}"
    centers, points, offsets, dists = structure.get_neighbor_list(r=cutoff, exclude_self=False)
    # exclude_self=False keeps coincident atoms; drop only each site's zero-offset self pair
    is_self = (centers == points) & np.all(offsets == 0, axis=1)
    close = dists[~is_self] < cutoff
    if close.any():
        return False, f"interatomic distance {dists[~is_self][close].min():.3f} A < {cutoff} A"
    return True, ""


#: SMACT's charge-neutrality test enumerates every combination of oxidation states, which
#: grows exponentially with the number of elements: 10 took 0.1 s, 15 took 24 s and 19 took
#: hours on this project's machines, and weak generators do emit such compositions. Curated
#: crystals have at most 6 (Alex-20 sample) and CDVAE's data sets fewer still.
MAX_ELEMENTS_SMACT = 10


@lru_cache(maxsize=None)
def _smact_valid_reduced(reduced_formula: str, oxidation_states_set: str) -> tuple[bool, str]:
    # imported lazily: smact loads its data tables on import
    from smact.screening import smact_validity
    n_el = len(Composition(reduced_formula).elements)
    if n_el > MAX_ELEMENTS_SMACT:
        return False, (f"{reduced_formula}: {n_el} elements, beyond the {MAX_ELEMENTS_SMACT} for which "
                       "SMACT's exhaustive oxidation-state search is tractable")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ok = bool(smact_validity(Composition(reduced_formula), use_pauling_test=True,
                                     include_alloys=True, oxidation_states_set=oxidation_states_set))
    except Exception as err:  # SMACT lacks data for some elements (e.g. Og): not a valid composition
        return False, f"SMACT cannot assess {reduced_formula}: {err!r}"
    return ok, "" if ok else f"{reduced_formula} fails SMACT charge neutrality / electronegativity"


def composition_validity(composition: Composition | str,
                         oxidation_states_set: str = OXIDATION_STATES_SET) -> tuple[bool, str]:
    """(valid, reason) by SMACT; cached per reduced formula because samples repeat compositions."""
    comp = Composition(composition) if isinstance(composition, str) else composition
    if comp.num_atoms == 0:
        return False, "empty composition"
    return _smact_valid_reduced(comp.reduced_formula, oxidation_states_set)


def validity_table(structures: Sequence[Structure | None], cutoff: float = MIN_DISTANCE,
                   min_volume: float = MIN_VOLUME,
                   oxidation_states_set: str = OXIDATION_STATES_SET) -> pd.DataFrame:
    """Per structure: `valid_struct`, `valid_comp`, `valid` (both) and `validity_reason`.

    A `None` entry (a sample whose CIF did not decode) is invalid on both counts.
    """
    rows = []
    for s in structures:
        if s is None:
            rows.append((False, False, "no structure (decoding failed)"))
            continue
        v_s, why_s = structure_validity(s, cutoff, min_volume)
        v_c, why_c = composition_validity(s.composition, oxidation_states_set)
        rows.append((v_s, v_c, "; ".join(w for w in (why_s, why_c) if w)))
    df = pd.DataFrame(rows, columns=["valid_struct", "valid_comp", "validity_reason"])
    df["valid_struct"] = df["valid_struct"].astype(bool)
    df["valid_comp"] = df["valid_comp"].astype(bool)
    df.insert(2, "valid", df["valid_struct"] & df["valid_comp"])
    return df
