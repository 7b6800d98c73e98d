"""Reading hull references: pymatgen's bundled MP entries, JSON entry files (the
Alexandria convex hull among them), formation-energy tables and our own Parquet tables."""
from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from crystalrl.hull.mp2020 import process_mp2020
from crystalrl.hull.reference import HullReference, elemental_ref_energies

if TYPE_CHECKING:
    from pymatgen.analysis.phase_diagram import PDEntry
    from pymatgen.entries.computed_entries import ComputedEntry

log = logging.getLogger(__name__)

#: What a reference file holds (config key `hull.format`; "auto" = from the file name).
FORMATS = ("entries", "formation_table", "table")
#: `hull.reference` values that name a built-in reference instead of a file.
KEYWORDS = ("alexandria", "mp_bundled")


def bundled_calc_compounds_path() -> Path:
    """pymatgen's 423 MP ComputedEntry dicts (89 elements, binaries, ternaries)."""
    import pymatgen.analysis.compatibility as pkg

    return Path(pkg.__file__).parent / "calc_compounds.json.gz"



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
        entries = process_mp2020(entries, name)
        elementals = process_mp2020(elementals, str(elemental_entries))
    return HullReference(entries + elementals, "total", name)

