"""Uniqueness among samples and novelty against a reference set, with StructureMatcher.

Two structures can only match when they have the same reduced composition
(pymatgen's StructureMatcher checks that first), so both searches run only inside
groups keyed by a canonical reduced formula (optionally also the spglib space group,
an approximation that the user opts into). The reference side is an index
`group key -> reference CIFs` built from the formula column alone; a reference CIF
is parsed (and Niggli/primitive-reduced) only when a sample lands in its group and
needs it, so a training split of millions of rows costs one pass over its formulas.
Groups are spread over worker processes.

Every structure is reduced once (`StructureMatcher._get_reduced_structure`, as
`StructureMatcher.group_structures` does) and pairs are then compared with
`fit(..., skip_structure_reduction=True)`: the same answer as plain `fit`, without
reducing both structures on every call. With `attempt_supercell=False` (the default)
a pair whose reduced cells differ in site count never matches, which skips `fit`.
"""
from __future__ import annotations

import logging
import math
import re
import warnings
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import reduce
import multiprocessing as mp

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer


from crystalrl.logs import Progress
from crystalrl.structures import parse_structure

SYMPREC = 0.1  # as the curated data's `spacegroup` column

_log = logging.getLogger(__name__)  # its lines reach the stage logger (`crystalrl.stages.main`)
_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*\.?\d*)")
_CIF_FORMULA_SUM = re.compile(r"^_chemical_formula_sum\s+['\"]?([^'\"\n]+)['\"]?\s*$", re.M)


def formula_key(formula: str) -> str:
    """Canonical reduced formula ('Cl1 Na1' -> 'Cl1Na1'; 'Na2Cl2' -> 'Cl1Na1').

    Element order and multiples never change the key, so the reference's `formula`
    column may be written in any convention. A regex handles plain formulas (fast for
    millions of rows); anything else (parentheses, ...) goes through pymatgen.
    """
    text = formula.replace(" ", "")
    tokens = _TOKEN.findall(text)
    if tokens and "".join(el + n for el, n in tokens) == text:
        counts: dict[str, float] = defaultdict(float)
        for el, n in tokens:
            counts[el] += float(n) if n else 1.0
    else:
        counts = dict(Composition(formula).get_el_amt_dict())
    amounts = list(counts.values())
    if all(float(a).is_integer() for a in amounts):
        g = reduce(math.gcd, (int(a) for a in amounts))
        amounts = [int(a) // g for a in amounts]
    else:  # fractional occupancies: normalise by the smallest amount
        m = min(amounts)
        amounts = [round(a / m, 6) for a in amounts]
    return "".join(f"{el}{a}" for el, a in sorted(zip(counts, amounts)))


def spacegroup_number(structure: Structure, symprec: float = SYMPREC) -> int:
    """spglib space group at `symprec`; 0 when spglib fails (never matches a real group)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # spglib's error-handling DeprecationWarning
            return int(SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number())
    except Exception:
        return 0


def _structure_key(structure: Structure, use_spacegroup: bool) -> tuple:
    key = formula_key(structure.composition.formula)
    return (key, spacegroup_number(structure)) if use_spacegroup else (key,)


def _matcher(matcher_kw: dict | None) -> StructureMatcher:
    """StructureMatcher with `matcher_kw` (config `evaluate.matcher`; pymatgen's defaults where absent)."""
    return StructureMatcher(**(matcher_kw or {}))


def _reduce(sm: StructureMatcher, s: Structure) -> Structure:
    return sm._get_reduced_structure(sm._process_species([s])[0], sm._primitive_cell, niggli=True)


def _fits(sm: StructureMatcher, ref_red: Structure, s_red: Structure) -> bool:
    """`sm.fit(ref, s)` on pre-reduced structures (site-count check first, exact when no supercell)."""
    if not sm._supercell and not sm._subset and len(ref_red) != len(s_red):
        return False
    return bool(sm.fit(ref_red, s_red, skip_structure_reduction=True))


# ---------- worker tasks (module-level so that they pickle) ----------

def _unique_task(structures: list[Structure], matcher_kw: dict | None) -> list[bool]:
    """Within one group: unique[i] = no earlier structure j with fit(s_j, s_i)."""
    sm = _matcher(matcher_kw)
    red = [_reduce(sm, s) for s in structures]
    out = []
    for i, s in enumerate(red):
        # earlier unique ones first: a duplicate usually matches its first occurrence
        order = [j for j in range(i) if out[j]] + [j for j in range(i) if not out[j]]
        out.append(not any(_fits(sm, red[j], s) for j in order))
    return out


def _novel_task(structures: list[Structure], ref_cifs: list[str], matcher_kw: dict | None
                ) -> tuple[list[bool], int]:
    """Within one group: novel[i] = no reference r with fit(r, s_i). Returns (novel, n_parsed).

    Reference CIFs are parsed lazily and at most once; the search stops at the first match.
    """
    sm = _matcher(matcher_kw)
    refs: list[Structure | None | bool] = [None] * len(ref_cifs)  # False = unparseable
    out = []
    for s in structures:
        s_red = _reduce(sm, s)
        novel = True
        for j, cif in enumerate(ref_cifs):
            if refs[j] is None:
                try:
                    refs[j] = _reduce(sm, parse_structure(cif))
                except Exception as err:
                    _log.warning("reference CIF #%d of group %s unreadable, skipped: %r",
                                 j, s.composition.reduced_formula, err)
                    refs[j] = False
            if refs[j] is not False and _fits(sm, refs[j], s_red):
                novel = False
                break
        out.append(novel)
    return out, sum(r is not None for r in refs)


def _run_tasks(fn, tasks: list[tuple], processes: int, what: str) -> list:
    """Run `fn(*task)` for each task, over a spawn pool when processes > 1 (safe after torch/jax);
    a long run logs how far it is (`what`: the groups being matched)."""
    progress = Progress(what, len(tasks), _log)
    if processes <= 1 or len(tasks) <= 1:
        results = []
        for t in tasks:
            results.append(fn(*t))
            progress.update()
        return results
    with ProcessPoolExecutor(max_workers=processes, mp_context=mp.get_context("spawn")) as ex:
        results = []
        for r in ex.map(fn, *zip(*tasks), chunksize=max(1, len(tasks) // (8 * processes))):
            results.append(r)
            progress.update()
        return results


def _order_by_cost(cost: list[float]) -> list[int]:
    # biggest groups first so the pool does not end on one long task
    return sorted(range(len(cost)), key=lambda i: -cost[i])


def unique_mask(structures: Sequence[Structure], matcher_kw: dict | None = None,
                use_spacegroup: bool = False, processes: int = 1) -> np.ndarray:
    """Boolean array: True where no earlier structure in the list matches (first occurrence is unique).

    Exactly `not any(StructureMatcher(**matcher_kw).fit(s_j, s_i) for j < i)` when
    `use_spacegroup` is False; with it, only structures of the same spglib space group
    (symprec 0.1) are compared.
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, s in enumerate(structures):
        groups[_structure_key(s, use_spacegroup)].append(i)
    idx_lists = [ix for ix in groups.values() if len(ix) > 1]
    out = np.ones(len(structures), dtype=bool)
    tasks = [([structures[i] for i in ix], matcher_kw) for ix in idx_lists]
    order = _order_by_cost([len(ix) ** 2 for ix in idx_lists])
    results = _run_tasks(_unique_task, [tasks[k] for k in order], processes, "uniqueness: formula groups")
    for k, res in zip(order, results):
        out[idx_lists[k]] = res
    return out


class NoveltyIndex:
    """Reference structures grouped by reduced formula (and optionally space group), parsed lazily.

    `reference` is a DataFrame with a `cif` column and, ideally, `formula` (any
    convention) and `spacegroup` (spglib, symprec 0.1) columns, as `data/train.parquet`;
    or a sequence of CIF strings / Structures. Without a `formula` column the formula
    is read from the CIF's `_chemical_formula_sum` line (no parse); without a
    `spacegroup` column and `use_spacegroup=True` every reference is parsed once.
    """

    def __init__(self, reference: pd.DataFrame | Sequence[str | Structure],
                 matcher_kw: dict | None = None, use_spacegroup: bool = False):
        self.matcher_kw = dict(matcher_kw or {})
        self.use_spacegroup = use_spacegroup
        if isinstance(reference, pd.DataFrame):
            if "cif" not in reference.columns:
                raise KeyError(f"reference table needs a 'cif' column; it has {list(reference.columns)}")
            cifs = reference["cif"].tolist()
            formulas = reference["formula"].tolist() if "formula" in reference.columns else None
            sgs = reference["spacegroup"].tolist() if "spacegroup" in reference.columns else None
        else:
            cifs = [c.to(fmt="cif") if isinstance(c, Structure) else c for c in reference]
            formulas = [c.composition.formula if isinstance(c, Structure) else None for c in reference]
            formulas = None if any(f is None for f in formulas) else formulas
            sgs = None
        self._groups: dict[tuple, list[str]] = defaultdict(list)
        self.n_reference, self.n_skipped = 0, 0
        key_cache: dict[str, str] = {}
        for row, cif in enumerate(cifs):
            try:
                if not isinstance(cif, str) or not cif:
                    raise ValueError("empty or missing CIF")
                f = formulas[row] if formulas is not None else None
                if not isinstance(f, str) or not f:
                    f = self._formula_from_cif(cif)
                key = key_cache.get(f)
                if key is None:
                    key = key_cache[f] = formula_key(f)
                if use_spacegroup:
                    sg = sgs[row] if sgs is not None else None
                    sg = int(sg) if sg is not None and not pd.isna(sg) else spacegroup_number(parse_structure(cif))
                    gkey = (key, sg)
                else:
                    gkey = (key,)
            except Exception as err:
                _log.warning("reference row %d skipped: %r", row, err)
                self.n_skipped += 1
                continue
            self._groups[gkey].append(cif)
            self.n_reference += 1
        self.n_parsed = 0

    @staticmethod
    def _formula_from_cif(cif: str) -> str:
        m = _CIF_FORMULA_SUM.search(cif)
        return m.group(1) if m else parse_structure(cif).composition.formula

    @property
    def n_groups(self) -> int:
        return len(self._groups)

    def is_novel(self, structures: Sequence[Structure], processes: int = 1) -> np.ndarray:
        """Boolean array: True where no reference structure of the same group matches.

        Exactly `not any(StructureMatcher(**matcher_kw).fit(ref, s) for ref in reference)`
        when `use_spacegroup` is False.
        """
        by_group: dict[tuple, list[int]] = defaultdict(list)
        for i, s in enumerate(structures):
            by_group[_structure_key(s, self.use_spacegroup)].append(i)
        out = np.ones(len(structures), dtype=bool)
        hit = [(k, ix) for k, ix in by_group.items() if k in self._groups]
        tasks = [([structures[i] for i in ix], self._groups[k], self.matcher_kw) for k, ix in hit]
        order = _order_by_cost([len(ix) * len(self._groups[k]) for k, ix in hit])
        results = _run_tasks(_novel_task, [tasks[j] for j in order], processes, "novelty: formula groups")
        for j, (res, n_parsed) in zip(order, results):
            out[hit[j][1]] = res
            self.n_parsed += n_parsed
        return out
