"""Energy above the convex hull: MP2020 corrections, then a cached per-chemsys hull.

Two facts drive the design:
- MLIP energies are "MP-compatible" only after pymatgen's MP2020 scheme (anion,
  GGA/GGA+U mixing corrections). `mp2020_entry` builds the entry the scheme
  expects: U values chosen exactly as `MPRelaxSet` would (its LDAUU table keyed by
  the most electronegative element), which is also what the scheme checks.
- Building a `PhaseDiagram` costs far more than placing a point on it, and a batch
  of samples shares few chemical systems. `HullReference` indexes the reference
  entries by chemical system once and builds each phase diagram once per
  element set (the PD of exactly that chemsys, from reference entries whose
  elements are a subset of it), then caches it.

References: `load_reference("mp_bundled")` (pymatgen's 423 MP entries), a JSON of
entry dicts, the Alexandria convex-hull json.bz2, or a formation-energy CSV.
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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Element, Structure
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

log = logging.getLogger(__name__)

EnergyKind = Literal["total", "formation"]

_COMPAT: MaterialsProject2020Compatibility | None = None


def mp2020_compatibility() -> MaterialsProject2020Compatibility:
    """One shared MP2020 scheme; POTCARs are never available for MLIP energies."""
    global _COMPAT
    if _COMPAT is None:
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
    """Formation-energy CSV (composition + formation_energy_per_atom) -> PDEntries."""
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


class HullReference:
    """Reference entries indexed by chemical system, with cached phase diagrams.

    `energy_kind` is "total" (entries are MP2020-compatible total energies; queries
    are MLIP energies turned into MP2020 entries) or "formation" (entries are
    formation energies with elements at 0; queries must be formation energies).
    """

    def __init__(self, entries: Iterable[PDEntry], energy_kind: EnergyKind = "total",
                 name: str = "reference"):
        self.energy_kind = energy_kind
        self.name = name
        self.by_chemsys: dict[frozenset[str], list[PDEntry]] = defaultdict(list)
        for e in entries:
            key = frozenset(el.symbol for el in e.composition.elements)
            self.by_chemsys[key].append(e)
        self.elements = {el for k in self.by_chemsys if len(k) == 1 for el in k}
        self._pd_cache: dict[tuple[str, ...], PhaseDiagram | str] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_chemsys.values())

    def __repr__(self) -> str:
        return (f"HullReference({self.name!r}, {len(self)} entries, {len(self.elements)} elements, "
                f"{self.energy_kind} energies, {len(self._pd_cache)} cached phase diagrams)")

    def to_parquet(self, path: str | os.PathLike) -> None:
        """Save as a compact table (name, formula, energy eV, energy_kind).

        Loading it back takes seconds where parsing the Alexandria json.bz2
        takes minutes, so a workflow can convert the reference once.
        """
        from .io import write_parquet_atomic

        rows = [(str(getattr(e, "entry_id", None) or e.name), e.composition.formula, float(e.energy))
                for v in self.by_chemsys.values() for e in v]
        df = pd.DataFrame(rows, columns=["name", "formula", "energy"])
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

    def phase_diagram(self, elements: Sequence[str]) -> PhaseDiagram:
        """The PD of exactly this chemical system, built once and cached.

        Raises `KeyError` naming the elements that have no reference entry.
        """
        key = tuple(sorted(set(elements)))
        if key not in self._pd_cache:
            missing = [el for el in key if el not in self.elements]
            if missing:
                self._pd_cache[key] = f"missing reference for elements: {', '.join(missing)}"
            else:
                try:
                    self._pd_cache[key] = PhaseDiagram(self.entries_for(key),
                                                       elements=[Element(el) for el in key])
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
        total energies in eV (needs `energy_kind == "total"`). `apply_mp2020=False`
        for MLIPs that already predict MP2020-corrected energies (CHGNet: see
        `MLIP.mp2020_corrected`). A query that cannot be placed gets NaN and a
        status saying why; nothing raises.
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
                pd_ = self.phase_diagram([el.symbol for el in e.composition.elements])
                _, eh = pd_.get_decomp_and_e_above_hull(e, allow_negative=True, check_stable=False)
                out[i] = eh
            except KeyError as exc:
                status[i] = exc.args[0]
            except Exception as exc:  # noqa: BLE001
                status[i] = f"failed: {type(exc).__name__}: {exc}"
        return out, status

    def _entries_from_pair(self, structures, energies, ids=None, apply_mp2020=True):
        if self.energy_kind != "total":
            raise ValueError(f"{self.name} holds formation energies; placing MLIP total energies "
                             "needs elemental reference entries (load_reference(..., "
                             "elemental_entries=...)) or formation-energy queries")
        energies = np.asarray(energies, dtype=float)
        if len(structures) != len(energies):
            raise ValueError(f"{len(structures)} structures but {len(energies)} energies")
        entries: list[ComputedStructureEntry | None] = []
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
                    entries.append(mp2020_entry(s, en, entry_id=sid, process=apply_mp2020))
                    status.append("ok")
                except Exception as exc:  # noqa: BLE001
                    entries.append(None)
                    status.append(f"failed: mp2020: {exc}")
        return entries, status


def _elemental_entries(path: str | os.PathLike) -> list[ComputedEntry]:
    entries, _ = _read_entry_json(Path(path))
    bad = [e.composition.reduced_formula for e in entries if len(e.composition.elements) != 1]
    if bad:
        raise ValueError(f"{path}: elemental entries file holds non-elemental entries: {bad[:5]}")
    return entries


def load_reference(spec: str | os.PathLike, *, elemental_entries: str | os.PathLike | None = None,
                   mp2020: bool | Literal["auto"] = "auto") -> HullReference:
    """Load a hull reference set.

    spec: "mp_bundled" (pymatgen's calc_compounds.json.gz), a Parquet written by
    `HullReference.to_parquet` (taken as is), a JSON(.gz/.bz2/.xz) of
    ComputedEntry/ComputedStructureEntry dicts (list or dict), the Alexandria
    convex-hull json.bz2 ({"entries": [...]}, taken as already corrected), or a
    CSV(.gz) of composition + formation_energy_per_atom (elements placed at 0).
    elemental_entries: optional JSON of elemental entries; added to an entry set,
    or, for a formation-energy CSV, used to turn it into total energies so that
    MLIP energies can be placed on it.
    mp2020: "auto" processes entries that carry MP run parameters (not for the
    Alexandria format); True/False forces it.
    """
    spec_s = str(spec)
    elementals = _elemental_entries(elemental_entries) if elemental_entries else []
    if spec_s == "mp_bundled":
        path, name = bundled_calc_compounds_path(), "mp_bundled"
    else:
        path, name = Path(spec_s), Path(spec_s).name
        if not path.exists():
            raise FileNotFoundError(f"hull reference not found: {path}")
    lower = path.name.lower()
    if lower.endswith(".parquet"):
        df = pd.read_parquet(path)
        kind = str(df["energy_kind"].iloc[0]) if len(df) else "total"
        entries = [PDEntry(Composition(f), float(en), name=str(nm))
                   for nm, f, en in zip(df["name"], df["formula"], df["energy"])]
        return HullReference(entries, kind, name)
    if ".csv" in lower:
        formation = _read_formation_csv(path)
        els = sorted({el.symbol for e in formation for el in e.composition.elements})
        if not elementals:
            zero = [PDEntry(Composition(el), 0.0, name=f"{el} (element, 0)") for el in els]
            return HullReference(formation + zero, "formation", name)
        # formation -> total: E = N * Ef + sum_i n_i mu_i, mu_i the lowest elemental entry
        elementals = _process_mp2020(elementals, str(elemental_entries)) if mp2020 else elementals
        mu = {}
        for e in elementals:
            el = e.composition.elements[0].symbol
            mu[el] = min(mu.get(el, np.inf), e.energy_per_atom)
        total = []
        for e in formation:
            lacking = [el.symbol for el in e.composition.elements if el.symbol not in mu]
            if lacking:
                continue  # these chemical systems then report "missing reference"
            total.append(PDEntry(e.composition, e.energy + sum(n * mu[el.symbol] for el, n in
                                                                e.composition.items()), name=e.name))
        return HullReference(total + elementals, "total", name)
    entries, alexandria = _read_entry_json(path)
    do = (not alexandria) if mp2020 == "auto" else bool(mp2020)
    if do:
        entries = _process_mp2020(entries, name)
        elementals = _process_mp2020(elementals, str(elemental_entries))
    return HullReference(entries + elementals, "total", name)


def e_above_hull(reference: HullReference, structures: Sequence[Structure | None],
                 energies_total: Sequence[float], mlip=None) -> tuple[np.ndarray, list[str]]:
    """MLIP total energies (eV) of structures -> e_above_hull, status.

    Pass the `mlip` that produced the energies so that MP2020 corrections are
    applied only when it does not already include them.
    """
    corrected = bool(getattr(mlip, "mp2020_corrected", False))
    return reference.e_above_hull((list(structures), energies_total), apply_mp2020=not corrected)
