"""Grouped, lazily parsed matching gives the same answers as exhaustive pairwise StructureMatcher."""
from __future__ import annotations

import tarfile
import warnings

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from crystalrl.evaluate.matching import (NoveltyIndex, formula_key, spacegroup_number,
                                         unique_mask)

MATCHER = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}


def _read_small(shared_data, n, max_sites=6, skip=0):
    index = pd.read_csv(shared_data / "alexandria_sample" / "index.csv")
    files = index.loc[index["nsites"] <= max_sites, "file"].sort_values().tolist()[skip:skip + n]
    out = []
    with tarfile.open(shared_data / "alexandria_sample" / "cifs.tar.gz") as tar, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = {m.name.split("/")[-1]: m for m in tar.getmembers() if m.isfile()}
        for f in files:
            out.append(Structure.from_str(tar.extractfile(names[f]).read().decode(), fmt="cif"))
    return out


def _substitute(s: Structure) -> Structure:
    """Swap the first element for another one (new composition, same geometry)."""
    el = s.composition.elements[0].symbol
    new = "Rb" if el != "Rb" else "Cs"
    if new in {e.symbol for e in s.composition.elements}:
        new = "Xe"
    t = s.copy()
    t.replace_species({el: new})
    return t


@pytest.fixture(scope="module")
def case(shared_data):
    """~60 structures: originals, copies, perturbed, strained, scaled, supercells, substitutions."""
    rng = np.random.default_rng(0)
    base = _read_small(shared_data, 10)
    samples = list(base)
    for s in base[:5]:
        samples.append(s.copy())                                       # exact duplicate
        p = s.copy()
        p.perturb(0.02)                                                # small noise: match
        samples.append(p)
        t = s.copy()
        t.apply_strain([0.45, 0.0, 0.0])                               # beyond ltol: no match
        samples.append(t)
        samples.append(_substitute(s))                                 # new composition
    for s in base[5:]:
        samples.append(s.make_supercell([2, 1, 1], in_place=False))     # supercell: match
        v = s.copy()
        v.scale_lattice(s.volume * 1.15)                               # isotropic scale: match
        samples.append(v)
        w = s.copy()
        w.translate_sites(list(range(len(w))), [0.13, 0.27, 0.05])      # origin shift: match
        samples.append(w)
        samples.append(Structure.from_sites(list(reversed(s.sites))))  # permuted order: match
    samples.extend(_substitute(s) for s in base[5:])
    samples.extend(_substitute(s).copy() for s in base[:3])            # repeated substitutions
    order = rng.permutation(len(samples))
    samples = [samples[i] for i in order]
    reference = _read_small(shared_data, 20, skip=10) + base[5:] + [_substitute(s) for s in base[:2]]
    return samples, reference


def _exhaustive_unique(structures, same_group=lambda a, b: True):
    sm = StructureMatcher(**MATCHER)
    return np.array([not any(same_group(structures[j], s) and sm.fit(structures[j], s) for j in range(i))
                     for i, s in enumerate(structures)])


def _exhaustive_novel(structures, reference, same_group=lambda a, b: True):
    sm = StructureMatcher(**MATCHER)
    return np.array([not any(same_group(r, s) and sm.fit(r, s) for r in reference) for s in structures])


def test_formula_key_is_canonical():
    assert formula_key("NaCl") == formula_key("Cl1 Na1") == formula_key("Na2Cl2") == "Cl1Na1"
    assert formula_key("Ca(OH)2") == formula_key("CaH2O2")
    assert formula_key("Co") != formula_key("CO")


def test_unique_and_novel_match_exhaustive(case):
    samples, reference = case
    assert len(samples) >= 55
    exp_unique = _exhaustive_unique(samples)
    exp_novel = _exhaustive_novel(samples, reference)
    # the case must contain both outcomes, or the comparison proves nothing
    assert 15 <= (~exp_unique).sum() <= len(samples) - 15
    assert 10 <= (~exp_novel).sum() <= len(samples) - 10

    np.testing.assert_array_equal(unique_mask(samples, MATCHER), exp_unique)

    ref_df = pd.DataFrame({"cif": [r.to(fmt="cif") for r in reference],
                           "formula": [r.composition.reduced_formula for r in reference]})
    index = NoveltyIndex(ref_df, MATCHER)
    np.testing.assert_array_equal(index.is_novel(samples), exp_novel)
    # lazily parsed: only references whose formula some sample has are ever read
    sample_keys = {formula_key(s.composition.formula) for s in samples}
    assert index.n_parsed <= sum(formula_key(r.composition.formula) in sample_keys for r in reference)
    # CIF strings without a formula column (formula read from _chemical_formula_sum), 2 processes
    index2 = NoveltyIndex([r.to(fmt="cif") for r in reference], MATCHER)
    np.testing.assert_array_equal(index2.is_novel(samples, processes=2), exp_novel)


def test_spacegroup_grouping_matches_exhaustive_within_groups(case):
    samples, reference = case
    sg = {id(s): spacegroup_number(s) for s in samples + reference}
    same = lambda a, b: sg[id(a)] == sg[id(b)]  # noqa: E731
    np.testing.assert_array_equal(unique_mask(samples, MATCHER, use_spacegroup=True),
                                  _exhaustive_unique(samples, same))
    np.testing.assert_array_equal(NoveltyIndex(reference, MATCHER, use_spacegroup=True).is_novel(samples),
                                  _exhaustive_novel(samples, reference, same))


def test_bad_reference_rows_are_skipped_not_fatal(shared_data):
    good = _read_small(shared_data, 2)
    df = pd.DataFrame({"cif": [good[0].to(fmt="cif"), None, "not a cif", good[1].to(fmt="cif")],
                       "formula": [good[0].composition.reduced_formula, "X", None, None]})
    index = NoveltyIndex(df, MATCHER)
    assert index.n_skipped == 2 and index.n_reference == 2
    np.testing.assert_array_equal(index.is_novel([good[1], _substitute(good[1])]), [False, True])
