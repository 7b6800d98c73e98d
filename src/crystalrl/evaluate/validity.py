"""Structural and compositional validity of generated crystals (CDVAE's definitions).

Structural: every interatomic distance, periodic images included, is at least
`cutoff` (`crystalrl.structures.MIN_DISTANCE`) and the cell volume is at least `min_volume` (0.1 A^3).
Compositional: SMACT charge neutrality with the Pauling electronegativity test;
a single element or an all-metal composition (alloy) counts as valid. The check
is `smact.screening.smact_validity` with the `smact14` oxidation states, i.e. the
full SMACT list that CDVAE's metric used (smact 4 defaults to a stricter ICSD24 set).

Strict (`strict_validity`, config `evaluate.strict`): LeMat-GenBench's physical checks at
its defaults, each its own column. The flat `MIN_DISTANCE` cut passes an Si-Si pair at 0.88 Å
and an O2 cell of 94 g/cm^3; the radius-based cut (radius_scale x (radius_offset + r_i + r_j),
1.45 Å for Si-Si at the defaults) and
the density window (1-25 g/cm^3) do not. Unlike the benchmark's minimum-image distance
matrix, every periodic image counts here (a cell shorter than the cut is caught too).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Structure

from crystalrl.config import section
from crystalrl.structures import MIN_DISTANCE

MIN_VOLUME = 0.1  # A^3
OXIDATION_STATES_SET = "smact14"
#: The schema's `evaluate.strict` defaults (LeMat-GenBench's).
STRICT: dict = section("evaluate")["strict"]
STRICT_COLUMNS = ("valid_radii", "valid_density", "valid_lattice")


@lru_cache(maxsize=None)
def _atomic_radius(symbol: str) -> float:
    from pymatgen.core import Element

    r = Element(symbol).atomic_radius
    return float(r) if r is not None else np.nan


def strict_validity(structure: Structure, strict: dict = STRICT,
                    distances: bool = True) -> tuple[dict[str, bool], str]:
    """({valid_radii, valid_density, valid_lattice}, reason) of LeMat-GenBench's physical checks.

    `distances=False` for a structure that failed the flat cut already: the radius-based cut
    (0.6 A or more at the defaults, H-H the shortest) fails it too, and a collapsed cell's neighbour
    list at the radius cut would hold millions of images."""
    scale, offset = float(strict["radius_scale"]), float(strict["radius_offset"])
    (rho_lo, rho_hi), (len_lo, len_hi) = strict["density"], strict["lattice_length"]
    why = []
    radii = np.array([_atomic_radius(el.symbol) for el in structure.species])
    if not distances:
        radii_ok = False
    elif np.isnan(radii).any():
        lacking = sorted({el.symbol for el, r in zip(structure.species, radii) if np.isnan(r)})
        radii_ok = False
        why.append(f"no atomic radius for {', '.join(lacking)}")
    else:
        cut = scale * (offset + 2 * radii.max())
        centers, points, offsets, dists = structure.get_neighbor_list(r=cut, exclude_self=False)
        keep = ~((centers == points) & np.all(offsets == 0, axis=1))
        need = scale * (offset + radii[centers[keep]] + radii[points[keep]])
        short = dists[keep] < need
        radii_ok = not short.any()
        if not radii_ok:
            k = np.argmin(dists[keep] - need)
            a, b = structure.species[centers[keep][k]].symbol, structure.species[points[keep][k]].symbol
            why.append(f"{a}-{b} {dists[keep][k]:.2f} A < {need[k]:.2f} A (radius-based)")
    density = float(structure.density)
    density_ok = rho_lo <= density <= rho_hi
    if not density_ok:
        why.append(f"density {density:.3g} g/cm^3 outside [{rho_lo}, {rho_hi}]")
    abc = structure.lattice.abc
    lattice_ok = all(len_lo < x < len_hi for x in abc) and structure.volume > 1.0
    if not lattice_ok:
        why.append(f"cell lengths {', '.join(f'{x:.3g}' for x in abc)} A outside ({len_lo}, {len_hi})")
    return dict(valid_radii=radii_ok, valid_density=density_ok, valid_lattice=lattice_ok), "; ".join(why)


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
                   oxidation_states_set: str = OXIDATION_STATES_SET, strict: dict = STRICT) -> pd.DataFrame:
    """Per structure: `valid_struct`, `valid_comp`, `valid` (both; CDVAE's, the paper's), the
    strict checks `valid_radii`, `valid_density`, `valid_lattice`, `valid_strict` (`valid` and
    all three) and `validity_reason` (every failed check, strict ones included).

    A `None` entry (a sample whose CIF did not decode) is invalid on every count.
    """
    rows = []
    for s in structures:
        if s is None:
            rows.append((False, False, False, False, False, "no structure (decoding failed)"))
            continue
        v_s, why_s = structure_validity(s, cutoff, min_volume)
        v_c, why_c = composition_validity(s.composition, oxidation_states_set)
        if np.isfinite(s.lattice.matrix).all() and s.volume > 0:
            checks, why_strict = strict_validity(s, strict, distances=v_s)
        else:
            checks, why_strict = dict.fromkeys(STRICT_COLUMNS, False), ""
        rows.append((v_s, v_c, *checks.values(), "; ".join(w for w in (why_s, why_c, why_strict) if w)))
    df = pd.DataFrame(rows, columns=["valid_struct", "valid_comp", *STRICT_COLUMNS, "validity_reason"])
    for col in ("valid_struct", "valid_comp", *STRICT_COLUMNS):
        df[col] = df[col].astype(bool)
    df.insert(2, "valid", df["valid_struct"] & df["valid_comp"])
    df.insert(6, "valid_strict", df["valid"] & df[list(STRICT_COLUMNS)].all(axis=1))
    return df
