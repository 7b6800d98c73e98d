"""Energy above the convex hull: MP2020 corrections, then a cached per-chemsys hull.

Three facts drive the design:
- MLIP energies are "MP-compatible" only after pymatgen's MP2020 scheme (anion,
  GGA/GGA+U mixing corrections). `mp2020_entry` builds the entry the scheme
  expects: U values chosen exactly as `MPRelaxSet` would (its LDAUU table keyed by
  the most electronegative element), which is also what the scheme checks. MLIPs
  trained on MP2020-corrected energies (CHGNet) must not be corrected again.
- A formation-energy table (MP's MP2020-corrected DFT values, or a user's own) is a
  hull once the elements sit at 0. An MLIP total energy is placed on it exactly as
  matbench-discovery does (`matbench_discovery.energy.get_e_form_per_atom` after
  `MaterialsProject2020Compatibility().process_entries`): the corrected energy minus
  the elemental reference energies, per atom; the references are the lowest energy
  per atom of each element among the elemental entries, rounded to 4 decimals.
- Building a `PhaseDiagram` costs far more than placing a point on it, and a batch
  of samples shares few chemical systems. `HullReference` indexes the reference
  entries by chemical system once and builds each phase diagram once per
  element set (the PD of exactly that chemsys, from reference entries whose
  elements are a subset of it), then caches it. Above `MAX_PD_ELEMENTS` elements
  (generated samples can hold a dozen) a PhaseDiagram takes minutes to hours, so the
  hull energy is a linear program over the same entries instead (`LinearHull`).

From config: `load_hull(HullConfig.from_dict(config["hull"]))`, checked before any
job runs by `check_config`. Without config: `load_reference("mp_bundled")`
(pymatgen's 423 MP entries), a JSON of entry dicts, the Alexandria convex-hull
json.bz2, a Parquet of `HullReference.to_parquet`, or a formation-energy CSV.

pymatgen is imported where it is used: every Snakemake parse (each Slurm job too) reads
`HullConfig`, and importing pymatgen's MP2020 scheme takes 3 s on its own.
"""
from __future__ import annotations

import bz2
import gzip
import itertools
import json
import logging
import lzma
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition, Element, Structure
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
    from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

from crystalrl.config import ConfigError, SectionConfig

log = logging.getLogger(__name__)

EnergyKind = Literal["total", "formation"]
#: What a reference file holds (config key `hull.format`; "auto" = from the file name).
FORMATS = ("entries", "formation_table", "table")
#: `hull.reference` values that name a built-in reference instead of a file.
KEYWORDS = ("alexandria", "mp_bundled")

_COMPAT: MaterialsProject2020Compatibility | None = None


def mp2020_compatibility() -> MaterialsProject2020Compatibility:
    """One shared MP2020 scheme; POTCARs are never available for MLIP energies."""
    global _COMPAT
    if _COMPAT is None:
        from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

        _COMPAT = MaterialsProject2020Compatibility(check_potcar=False)
    return _COMPAT


def bundled_calc_compounds_path() -> Path:
    """pymatgen's 423 MP ComputedEntry dicts (89 elements, binaries, ternaries)."""
    import pymatgen.analysis.compatibility as pkg

    return Path(pkg.__file__).parent / "calc_compounds.json.gz"


# ---------------------------------------------------------------- MP2020 entries
def mp_hubbard_u(composition: Composition) -> dict[str, float]:
    """The non-zero U values MP (MPRelaxSet) uses for this composition.

    MPRelaxSet's LDAUU table is keyed by the most electronegative element (only
    O and F have entries), and MP2020Compatibility checks U against that same
    table, so deriving U from it keeps both in agreement by construction.
    """
    from pymatgen.io.vasp.sets import MPRelaxSet

    table = MPRelaxSet.CONFIG["INCAR"]["LDAUU"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # noble gases have no Pauling X (NaN), as in pymatgen
        els = sorted((el for el in composition.elements if composition[el] > 0), key=lambda el: el.X)
    if not els:
        return {}
    per_el = table.get(els[-1].symbol, {})
    return {el.symbol: float(per_el[el.symbol]) for el in els if float(per_el.get(el.symbol, 0)) != 0}


def mp2020_entry(structure: Structure, energy_total: float, *, entry_id: str | None = None,
                 process: bool = True) -> ComputedStructureEntry:
    """A ComputedStructureEntry for an MLIP total energy (eV), MP2020-corrected.

    Raises `ValueError` when the MP2020 scheme rejects the entry (its message says
    why), so a caller can record the reason and go on.
    """
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    hubbards = mp_hubbard_u(structure.composition)
    params = {"run_type": "GGA+U" if hubbards else "GGA", "is_hubbard": bool(hubbards),
              "hubbards": hubbards, "software": "vasp"}
    entry = ComputedStructureEntry(structure, float(energy_total), parameters=params,
                                   entry_id=entry_id)
    if not process:
        return entry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "failed to guess oxidation states" for odd samples
        out = mp2020_compatibility().process_entry(entry)
    if out is None:
        raise ValueError(f"MP2020 compatibility rejected {structure.composition.reduced_formula}")
    return out


# ---------------------------------------------------------------- reference sets
def _open_any(path: Path):
    """Open plain, .gz, .bz2 or .xz files as text."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rt")
    if suffix == ".bz2":
        return bz2.open(path, "rt")
    if suffix == ".xz":
        return lzma.open(path, "rt")
    return open(path)


def _entry_from_dict(d: dict) -> ComputedEntry:
    """Entry dict -> ComputedEntry; structures are dropped to save memory."""
    from pymatgen.entries.computed_entries import ComputedEntry

    if "structure" in d:
        d = {k: v for k, v in d.items() if k != "structure"}
    d = {**d, "@class": "ComputedEntry", "@module": "pymatgen.entries.computed_entries"}
    return ComputedEntry.from_dict(d)


def _process_mp2020(entries: list[ComputedEntry], source: str) -> list[ComputedEntry]:
    """MP2020-process entries that carry MP run parameters; keep others as given.

    pymatgen cleans previous adjustments before re-applying them, so processing an
    already-corrected MP entry is idempotent. Entries without `run_type` (e.g.
    bare energies) cannot be checked and are taken as given.
    """
    todo = [e for e in entries if e.parameters.get("run_type") in ("GGA", "GGA+U")]
    rest = [e for e in entries if e.parameters.get("run_type") not in ("GGA", "GGA+U")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = mp2020_compatibility().process_entries(todo, verbose=False)
    if len(done) < len(todo):
        log.warning("%s: MP2020 compatibility dropped %d of %d entries", source,
                    len(todo) - len(done), len(todo))
    return list(done) + rest


def _read_entry_json(path: Path) -> tuple[list[ComputedEntry], bool]:
    """Read a JSON of entry dicts (list, {key: dict} or Alexandria's {"entries": [...]}).

    Returns the entries and whether the file is in the Alexandria hull format
    (whose energies already include the MP2020 corrections).
    """
    with _open_any(path) as fh:
        raw = json.load(fh)
    alexandria = isinstance(raw, dict) and isinstance(raw.get("entries"), list)
    if alexandria:
        items = raw.pop("entries")
    elif isinstance(raw, dict):
        items = list(raw.values())
    elif isinstance(raw, list):
        items = raw
    else:
        raise ValueError(f"{path}: expected a list or dict of entry dicts, got {type(raw).__name__}")
    del raw
    entries = []
    for i, d in enumerate(items):
        try:
            entries.append(_entry_from_dict(d))
        except Exception as exc:  # noqa: BLE001 - one bad dict must not stop the load
            log.warning("%s: entry %d skipped (%s: %s)", path, i, type(exc).__name__, exc)
        items[i] = None  # free the dict (and its structure) as we go
    return entries, alexandria


def _read_formation_csv(path: Path) -> list[PDEntry]:
    """Formation-energy CSV (composition + formation_energy_per_atom, eV/atom) -> PDEntries."""
    from pymatgen.analysis.phase_diagram import PDEntry
    from pymatgen.core import Composition

    df = pd.read_csv(path)
    comp_col = next((c for c in ("composition", "formula", "pretty_formula") if c in df), None)
    if comp_col is None or "formation_energy_per_atom" not in df:
        raise ValueError(f"{path}: needs a composition/formula column and "
                         f"'formation_energy_per_atom'; has {list(df.columns)}")
    ids = df["material_id"] if "material_id" in df else pd.Series(range(len(df)))
    out = []
    for i, (cid, comp, ef) in enumerate(zip(ids, df[comp_col], df["formation_energy_per_atom"])):
        try:
            c = Composition(str(comp))
            if not np.isfinite(ef):
                raise ValueError("formation_energy_per_atom is not finite")
            out.append(PDEntry(c, float(ef) * c.num_atoms, name=str(cid)))
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: row %d (%s) skipped (%s)", path, i, cid, exc)
    return out


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
        from .io import write_parquet_atomic

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


def _elemental_entries(path: str | os.PathLike) -> list[ComputedEntry]:
    entries, _ = _read_entry_json(Path(path))
    bad = [e.composition.reduced_formula for e in entries if len(e.composition.elements) != 1]
    if bad:
        raise ValueError(f"{path}: elemental entries file holds non-elemental entries: {bad[:5]}")
    return entries


def reference_format(path: str | os.PathLike) -> str:
    """The `hull.format` a reference file has by its name (the meaning of "auto")."""
    lower = Path(path).name.lower()
    if ".csv" in lower:
        return "formation_table"
    if lower.endswith(".parquet"):
        return "table"
    return "entries"


def formation_reference(path: str | os.PathLike,
                        elemental_entries: str | os.PathLike | None = None) -> HullReference:
    """A formation-energy table as a hull (elements at 0 eV/atom).

    With `elemental_entries`, MLIP total energies can be placed on it: rows holding an
    element without a reference energy are left out (and logged), since no query in
    their chemical systems could be compared with them.
    """
    from pymatgen.analysis.phase_diagram import PDEntry
    from pymatgen.core import Composition

    path = Path(path)
    formation = _read_formation_csv(path)
    if elemental_entries is None:
        els = sorted({el.symbol for e in formation for el in e.composition.elements})
        zero = [PDEntry(Composition(el), 0.0, name=f"{el} (element, 0)") for el in els]
        return HullReference(formation + zero, "formation", path.name)
    mu = elemental_ref_energies(_elemental_entries(elemental_entries))
    kept = [e for e in formation if all(el.symbol in mu for el in e.composition.elements)]
    if len(kept) < len(formation):
        log.warning("%s: %d rows hold elements without an entry in %s; left out", path,
                    len(formation) - len(kept), elemental_entries)
    zero = [PDEntry(Composition(el), 0.0, name=f"{el} (element, 0)") for el in sorted(mu)]
    return HullReference(kept + zero, "formation", path.name, elemental_refs=mu)


class _TableGroups(Mapping):
    """chemical system -> its PDEntries, built from a table's rows the first time a job asks
    for that system. A job places samples in a few hundred systems; building all of
    Alexandria's entries (hundreds of thousands of Compositions) took it minutes."""

    def __init__(self, names, formulas, energies, chemsys):
        self._cols = (np.asarray(names, dtype=object), np.asarray(formulas, dtype=object),
                      np.asarray(energies, dtype=np.float64))
        codes, uniques = pd.factorize(pd.Series(chemsys, dtype=object), sort=False)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
        self._rows = {frozenset(u.split("-")): order[bounds[i]:bounds[i + 1]] for i, u in enumerate(uniques)}
        self.sizes = {k: len(v) for k, v in self._rows.items()}
        self._built: dict = {}

    def __getitem__(self, key):
        if key not in self._built:
            from pymatgen.analysis.phase_diagram import PDEntry
            from pymatgen.core import Composition

            names, formulas, energies = self._cols
            idx = self._rows[key]  # KeyError for a system with no entries, as a dict would
            self._built[key] = [PDEntry(Composition(formulas[i]), float(energies[i]), name=str(names[i])) for i in idx]
        return self._built[key]

    def __iter__(self):
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key) -> bool:
        return key in self._rows


def _read_table(path: Path) -> HullReference:
    """A table written by `HullReference.to_parquet`: read as columns and indexed by chemical
    system; entries are built per system when asked for (`_TableGroups`)."""
    from pymatgen.core import Composition

    df = pd.read_parquet(path)
    kind = str(df["energy_kind"].iloc[0]) if len(df) else "total"
    role = df["role"] if "role" in df else pd.Series("entry", index=df.index)
    ent = df[role == "entry"]
    refs = df[role == "elemental_ref"]
    chemsys = (ent["chemsys"] if "chemsys" in ent else  # tables written before the column existed
               ent["formula"].map(lambda f: "-".join(sorted(el.symbol for el in Composition(f).elements))))
    groups = _TableGroups(ent["name"].to_numpy(), ent["formula"].to_numpy(), ent["energy"].to_numpy(),
                          chemsys.to_numpy())
    mu = dict(zip(refs["formula"], refs["energy"].astype(float))) if len(refs) else None
    return HullReference((), kind, path.name, elemental_refs=mu, by_chemsys=groups)


def load_reference(spec: str | os.PathLike, *, elemental_entries: str | os.PathLike | None = None,
                   mp2020: bool | Literal["auto"] = "auto", format: str = "auto") -> HullReference:
    """Load a hull reference set (for config, use `load_hull`).

    spec: "mp_bundled" (pymatgen's calc_compounds.json.gz) or a file read as `format`
    says (see `reference_format` for "auto"): "table" (a Parquet written by
    `HullReference.to_parquet`, taken as is), "entries" (a JSON(.gz/.bz2/.xz) of
    ComputedEntry/ComputedStructureEntry dicts, list or dict, or the Alexandria
    convex-hull json.bz2 {"entries": [...]}, taken as already corrected) or
    "formation_table" (a CSV(.gz) of composition + formation_energy_per_atom).
    elemental_entries: optional JSON of elemental entries: for a formation table, the
    reference energies that MLIP total energies are referred to; otherwise added to
    the entries.
    mp2020: "auto" processes entries that carry MP run parameters (not for the
    Alexandria format); True/False forces it.
    """
    spec_s = str(spec)
    if spec_s == "mp_bundled":
        path, name = bundled_calc_compounds_path(), "mp_bundled"
    else:
        path, name = Path(spec_s), Path(spec_s).name
        if not path.exists():
            raise FileNotFoundError(f"hull reference not found: {path}")
    fmt = reference_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise ValueError(f"unknown hull reference format {format!r}; one of auto, {', '.join(FORMATS)}")
    if fmt == "table":
        return _read_table(path)
    if fmt == "formation_table":
        return formation_reference(path, elemental_entries)
    elementals = _elemental_entries(elemental_entries) if elemental_entries else []
    entries, alexandria = _read_entry_json(path)
    do = (not alexandria) if mp2020 == "auto" else bool(mp2020)
    if do:
        entries = _process_mp2020(entries, name)
        elementals = _process_mp2020(elementals, str(elemental_entries))
    return HullReference(entries + elementals, "total", name)


# ---------------------------------------------------------------- from config
@dataclass(frozen=True)
class HullConfig(SectionConfig):
    """The `hull` config section (keys and defaults: the schema's `hull`).

    reference: alexandria, mp_bundled or a file; format: what that file holds;
    path/url/sha256: where the Alexandria hull is downloaded to and from;
    elemental_entries: the elemental reference entries (required with a formation table).
    """

    SECTION: ClassVar[str] = "hull"

    reference: str
    format: str
    path: str | None
    url: str | None
    sha256: str | None
    elemental_entries: str | None

    @property
    def file_format(self) -> str | None:
        """The format of the reference file (None for mp_bundled)."""
        if self.reference == "mp_bundled":
            return None
        if self.reference == "alexandria":
            return "entries" if self.format == "auto" else self.format
        return reference_format(self.reference) if self.format == "auto" else self.format

    @property
    def file(self) -> str | None:
        """The reference file the config points to (None for mp_bundled)."""
        if self.reference == "mp_bundled":
            return None
        return self.path if self.reference == "alexandria" else self.reference

    def input_files(self) -> list[str]:
        """The local files a hull built from this config reads (rule inputs)."""
        return [f for f in (self.file, self.elemental_entries) if f]


def load_hull(cfg: HullConfig) -> HullReference:
    """The hull reference a config describes: the one way to build a hull from config.

    A formation table without `elemental_entries` is refused: the workflow places MLIP
    total energies on the hull, and those need the elemental reference energies.
    """
    if cfg.file_format == "formation_table" and not cfg.elemental_entries:
        raise ValueError(f"config key 'hull.elemental_entries': the formation-energy table {cfg.file} "
                         "needs elemental reference entries to place MLIP energies on it")
    if cfg.reference == "mp_bundled":
        return load_reference("mp_bundled", elemental_entries=cfg.elemental_entries)
    if not cfg.file:
        raise ValueError("config key 'hull.path': reference 'alexandria' needs the path of the hull file")
    return load_reference(cfg.file, elemental_entries=cfg.elemental_entries, format=cfg.file_format)


def check_config(cfg_dict: Mapping[str, Any] | None, *, root: str | os.PathLike | None = None) -> list[str]:
    """Problems of a `hull` config section that would stop a job later, each naming its key.

    For the workflow's parse-time check: bad keys or values, a reference file or
    elemental entries file that does not exist (and, for the Alexandria hull, no URL
    to download it from), a formation table without elemental entries or without
    the columns it needs. Relative paths are taken from `root` (default: the
    current directory). An empty list means the hull can be built.
    """
    try:
        cfg = HullConfig.from_dict(dict(cfg_dict or {}))
    except ConfigError as exc:
        return [line for line in str(exc).splitlines()[1:] if line]
    base = Path(root) if root is not None else Path.cwd()

    def missing(p: str) -> bool:
        return not (base / p).exists()

    problems = []
    if cfg.reference == "mp_bundled":
        if cfg.format != "auto":
            problems.append(f"config key 'hull.format': {cfg.format!r} describes a reference file; "
                            "'hull.reference' is mp_bundled (use auto)")
    elif cfg.reference == "alexandria":
        if not cfg.path:
            problems.append("config key 'hull.path': reference 'alexandria' needs the path to download the hull to")
        elif missing(cfg.path) and not cfg.url:
            problems.append(f"config key 'hull.path': {cfg.path} does not exist and 'hull.url' is null: "
                            "nothing to download the Alexandria hull from")
    elif missing(cfg.reference):
        problems.append(f"config key 'hull.reference': {cfg.reference} does not exist "
                        f"(a reference file, or one of {', '.join(KEYWORDS)})")
    elif cfg.file_format == "formation_table":
        try:
            cols = set(pd.read_csv(base / cfg.reference, nrows=0).columns)
        except Exception as exc:  # noqa: BLE001
            cols = set()
            problems.append(f"config key 'hull.reference': {cfg.reference} does not read as a CSV: {exc}")
        else:
            if "formation_energy_per_atom" not in cols or not cols & {"composition", "formula", "pretty_formula"}:
                problems.append(f"config key 'hull.reference': {cfg.reference} needs columns "
                                f"'formation_energy_per_atom' and 'composition' (or 'formula'); has {sorted(cols)}")
    if cfg.file_format == "formation_table" and not cfg.elemental_entries:
        problems.append(f"config key 'hull.elemental_entries': the formation-energy table {cfg.file} needs "
                        "elemental reference entries (MLIP energies are placed on it as E - sum n_i mu_i)")
    if cfg.elemental_entries and missing(cfg.elemental_entries):
        problems.append(f"config key 'hull.elemental_entries': {cfg.elemental_entries} does not exist")
    return problems


def e_above_hull(reference: HullReference, structures: Sequence[Structure | None],
                 energies_total: Sequence[float], mlip=None) -> tuple[np.ndarray, list[str]]:
    """MLIP total energies (eV) of structures -> e_above_hull, status.

    Pass the `mlip` that produced the energies so that MP2020 corrections are
    applied only when it does not already include them.
    """
    corrected = bool(getattr(mlip, "mp2020_corrected", False))
    return reference.e_above_hull((list(structures), energies_total), apply_mp2020=not corrected)
