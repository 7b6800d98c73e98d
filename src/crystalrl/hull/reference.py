"""The hull itself: reference entries indexed by chemical system, cached phase diagrams,
and a linear program for systems too large for one.

A formation-energy table (MP's MP2020-corrected DFT values, or a user's own) is a
hull once the elements sit at 0. An MLIP total energy is placed on it exactly as
matbench-discovery does (`matbench_discovery.energy.get_e_form_per_atom` after
`MaterialsProject2020Compatibility().process_entries`): the corrected energy minus
the elemental reference energies, per atom; the references are the lowest energy
per atom of each element among the elemental entries, rounded to 4 decimals.

Building a `PhaseDiagram` costs far more than placing a point on it, and a batch of
samples shares few chemical systems. `HullReference` indexes the reference entries by
chemical system once and builds each phase diagram once per element set (the PD of
exactly that chemsys, from reference entries whose elements are a subset of it), then
caches it. Above `MAX_PD_ELEMENTS` elements (generated samples can hold a dozen) a
PhaseDiagram takes minutes to hours, so the hull energy is a linear program over the
same entries instead (`LinearHull`).
"""
from __future__ import annotations

import itertools
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal, Mapping

import numpy as np
import pandas as pd

from crystalrl.hull.mp2020 import mp2020_entry, needs_mp2020

if TYPE_CHECKING:
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Element, Structure
    from pymatgen.entries.computed_entries import ComputedEntry

EnergyKind = Literal["total", "formation"]


def elemental_ref_energies(entries: Iterable[ComputedEntry | PDEntry]) -> dict[str, float]:
    """Element -> reference energy (eV/atom): the lowest energy per atom among its entries,
    rounded to 4 decimals, as matbench-discovery's `mp_elemental_ref_energies`."""
    mu: dict[str, float] = {}
    for e in entries:
        if len(e.composition.elements) != 1:
            continue
        el = e.composition.elements[0].symbol
        mu[el] = min(mu.get(el, np.inf), e.energy_per_atom)
    return {el: round(float(v), 4) for el, v in mu.items()}


#: Above this many elements a PhaseDiagram is no longer worth building: qhull works in
#: n-1 dimensions over the entries of every sub-system (MP-20: 8 elements 1 s, 9 5 s,
#: 10 43 s, 12 more than 10 minutes), and generated samples can hold that many.
MAX_PD_ELEMENTS = 6


class LinearHull:
    """The convex hull of one chemical system as a linear program, for systems too large
    for a PhaseDiagram.

    The hull energy per atom at atomic fractions x is
        E_hull(x) = min_lambda sum_j lambda_j eps_j  s.t.  sum_j lambda_j a_j = x,  lambda >= 0,
    with a_j the atomic fractions and eps_j the energy per atom of reference entry j:
    the lowest energy of any mixture of the entries with that composition, which is
    what the PhaseDiagram's facets give, without building them (scipy's HiGHS solver).
    """

    def __init__(self, entries: Sequence[PDEntry], elements: Sequence[Element]):
        self.elements = list(elements)
        self.a_EJ = np.array([[e.composition.get_atomic_fraction(el) for e in entries] for el in self.elements])
        self.eps_J = np.array([e.energy_per_atom for e in entries])

    def e_above_hull(self, entry: PDEntry) -> float:
        from scipy.optimize import linprog

        x_E = [entry.composition.get_atomic_fraction(el) for el in self.elements]
        res = linprog(self.eps_J, A_eq=self.a_EJ, b_eq=x_E, bounds=(0, None), method="highs")
        if res.status != 0:
            raise ValueError(f"hull linear program: {res.message}")
        return float(entry.energy_per_atom - res.fun)


class HullReference:
    """Reference entries indexed by chemical system, with cached phase diagrams.

    `energy_kind` is "total" (entries are MP2020-compatible total energies; queries
    are MLIP energies turned into MP2020 entries) or "formation" (entries are
    formation energies with elements at 0). A formation reference with
    `elemental_refs` (element -> eV/atom) also places MLIP total energies, as
    matbench-discovery does: MP2020-compatible energy minus the references.
    """

    def __init__(self, entries: Iterable[PDEntry], energy_kind: EnergyKind = "total",
                 name: str = "reference", elemental_refs: Mapping[str, float] | None = None,
                 by_chemsys: Mapping[frozenset[str], list[PDEntry]] | None = None):
        self.energy_kind = energy_kind
        self.name = name
        self.elemental_refs = dict(elemental_refs) if elemental_refs else None
        if self.elemental_refs is not None and energy_kind != "formation":
            raise ValueError("elemental_refs belong to a formation-energy reference")
        if by_chemsys is not None:  # already indexed (a table read lazily: `_read_table`)
            self.by_chemsys = by_chemsys
        else:
            self.by_chemsys = defaultdict(list)
            for e in entries:
                key = frozenset(el.symbol for el in e.composition.elements)
                self.by_chemsys[key].append(e)
        self.elements = {el for k in self.by_chemsys if len(k) == 1 for el in k}
        self._pd_cache: dict[tuple[str, ...], PhaseDiagram | str] = {}

    def __len__(self) -> int:
        sizes = getattr(self.by_chemsys, "sizes", None)
        return sum(sizes.values()) if sizes else sum(len(v) for v in self.by_chemsys.values())

    def __repr__(self) -> str:
        refs = f", {len(self.elemental_refs)} elemental references" if self.elemental_refs else ""
        return (f"HullReference({self.name!r}, {len(self)} entries, {len(self.elements)} elements, "
                f"{self.energy_kind} energies{refs}, {len(self._pd_cache)} cached phase diagrams)")

    def to_parquet(self, path: str | os.PathLike) -> None:
        """Save as a compact table (name, formula, energy eV, energy_kind, role).

        Loading it back takes seconds where parsing the Alexandria json.bz2
        takes minutes, so a workflow can convert the reference once. Elemental
        references are rows with role "elemental_ref" (energy in eV/atom).
        """
        from crystalrl.io import write_parquet_atomic

        rows = [(str(getattr(e, "entry_id", None) or e.name), e.composition.formula, float(e.energy), "entry",
                 "-".join(sorted(k))) for k, v in self.by_chemsys.items() for e in v]
        rows += [(f"{el} reference", el, mu, "elemental_ref", el) for el, mu in (self.elemental_refs or {}).items()]
        df = pd.DataFrame(rows, columns=["name", "formula", "energy", "role", "chemsys"])
        df["energy_kind"] = self.energy_kind
        write_parquet_atomic(df, path)

    # -- phase diagrams ---------------------------------------------------
    def entries_for(self, elements: Sequence[str]) -> list[PDEntry]:
        """Reference entries whose element set is a subset of `elements`."""
        els = sorted(set(elements))
        out: list[PDEntry] = []
        for k in range(1, len(els) + 1):
            for sub in itertools.combinations(els, k):
                out.extend(self.by_chemsys.get(frozenset(sub), ()))
        return out

    def n_compounds(self, elements: Sequence[str]) -> int:
        """How many reference entries of two or more elements lie in the chemical system of
        `elements` (its subsystems included): 0 means its hull is the elements alone, so any
        compound with a negative formation energy looks stable (`crystalrl.rl.guards`)."""
        els = sorted(set(elements))
        sizes = getattr(self.by_chemsys, "sizes", None)  # a lazily read table counts without building entries
        return sum((sizes.get(frozenset(sub), 0) if sizes is not None else len(self.by_chemsys.get(frozenset(sub), ())))
                   for k in range(2, len(els) + 1) for sub in itertools.combinations(els, k))

    def phase_diagram(self, elements: Sequence[str]) -> PhaseDiagram | LinearHull:
        """The hull of exactly this chemical system, built once and cached: a PhaseDiagram
        up to `MAX_PD_ELEMENTS` elements, a `LinearHull` above.

        Raises `KeyError` naming the elements that have no reference entry.
        """
        from pymatgen.analysis.phase_diagram import PhaseDiagram
        from pymatgen.core import Element

        key = tuple(sorted(set(elements)))
        if key not in self._pd_cache:
            missing = [el for el in key if el not in self.elements]
            if missing:
                self._pd_cache[key] = f"missing reference for elements: {', '.join(missing)}"
            else:
                try:
                    hull = PhaseDiagram if len(key) <= MAX_PD_ELEMENTS else LinearHull
                    self._pd_cache[key] = hull(self.entries_for(key), elements=[Element(el) for el in key])
                except Exception as exc:  # noqa: BLE001 - cache the reason, report per row
                    self._pd_cache[key] = f"failed: phase diagram {'-'.join(key)}: {exc}"
        pd_ = self._pd_cache[key]
        if isinstance(pd_, str):
            raise KeyError(pd_)
        return pd_

    # -- queries ----------------------------------------------------------
    def e_above_hull(self, entries_or_pair, *, ids: Sequence[str] | None = None,
                     apply_mp2020: bool = True) -> tuple[np.ndarray, list[str]]:
        """e_above_hull (eV/atom, negative allowed) and a status per query.

        `entries_or_pair`: a list of entries in this reference's energy space, or a
        pair `(structures, energies)` of pymatgen Structures (None allowed) and MLIP
        total energies in eV (needs total energies or elemental references).
        `apply_mp2020=False` for MLIPs that already predict MP2020-corrected
        energies (CHGNet: see `MLIP.mp2020_corrected`). A query that cannot be
        placed gets NaN and a status saying why; nothing raises.
        """
        if isinstance(entries_or_pair, tuple) and len(entries_or_pair) == 2:
            entries, status = self._entries_from_pair(*entries_or_pair, ids=ids,
                                                      apply_mp2020=apply_mp2020)
        else:
            entries = list(entries_or_pair)
            status = ["ok" if e is not None else "failed: no entry" for e in entries]
        out = np.full(len(entries), np.nan)
        for i, e in enumerate(entries):
            if e is None:
                continue
            try:
                if not np.isfinite(e.energy):
                    raise ValueError("energy is not finite")
                hull = self.phase_diagram([el.symbol for el in e.composition.elements])
                if isinstance(hull, LinearHull):
                    out[i] = hull.e_above_hull(e)
                else:
                    out[i] = hull.get_decomp_and_e_above_hull(e, allow_negative=True, check_stable=False)[1]
            except KeyError as exc:
                status[i] = exc.args[0]
            except Exception as exc:  # noqa: BLE001
                status[i] = f"failed: {type(exc).__name__}: {exc}"
        return out, status

    def formation_entry(self, entry: ComputedEntry) -> PDEntry:
        """An MP2020-compatible total-energy entry -> its formation-energy PDEntry.

        E_form = E - sum_i n_i mu_i (matbench-discovery's `get_e_form_per_atom`, times N).
        Raises KeyError naming elements without a reference energy.
        """
        from pymatgen.analysis.phase_diagram import PDEntry

        comp = entry.composition
        missing = [el.symbol for el in comp.elements if el.symbol not in self.elemental_refs]
        if missing:
            raise KeyError(f"missing reference for elements: {', '.join(missing)}")
        e_form = entry.energy - sum(n * self.elemental_refs[el.symbol] for el, n in comp.items())
        return PDEntry(comp, e_form, name=str(entry.entry_id))

    def _entries_from_pair(self, structures, energies, ids=None, apply_mp2020=True):
        if self.energy_kind != "total" and self.elemental_refs is None:
            raise ValueError(f"{self.name} holds formation energies; placing MLIP total energies "
                             "needs elemental reference entries (config key 'hull.elemental_entries', "
                             "load_reference(..., elemental_entries=...)) or formation-energy queries")
        energies = np.asarray(energies, dtype=float)
        if len(structures) != len(energies):
            raise ValueError(f"{len(structures)} structures but {len(energies)} energies")
        entries: list[PDEntry | None] = []
        status: list[str] = []
        for i, (s, en) in enumerate(zip(structures, energies)):
            sid = None if ids is None else str(ids[i])
            if s is None:
                entries.append(None)
                status.append("failed: no structure")
            elif not np.isfinite(en):
                entries.append(None)
                status.append("failed: energy is NaN")
            else:
                try:
                    e = mp2020_entry(s, en, entry_id=sid, process=apply_mp2020)
                except Exception as exc:  # noqa: BLE001
                    entries.append(None)
                    status.append(f"failed: mp2020: {exc}")
                    continue
                try:
                    entries.append(e if self.elemental_refs is None else self.formation_entry(e))
                    status.append("ok")
                except KeyError as exc:
                    entries.append(None)
                    status.append(exc.args[0])
        return entries, status


def e_above_hull(reference: HullReference, structures: Sequence[Structure | None],
                 energies_total: Sequence[float], mlip=None) -> tuple[np.ndarray, list[str]]:
    """MLIP total energies (eV) of structures -> e_above_hull, status.

    Pass the `mlip` that produced the energies so that MP2020 corrections are
    applied only when it does not already include them.
    """
    return reference.e_above_hull((list(structures), energies_total), apply_mp2020=needs_mp2020(mlip))
