"""Readers for every data source, each a lazy stream of `Row`s.

A reader only finds rows; it never parses structures. Parsing (the expensive part)
happens in `crystalrl.data.curate`'s worker processes (`crystalrl.structures`), so a
1.3 M-row Alex-20 CSV streams through in chunks and a bad row is rejected there
with the location recorded here (`Row.loc`, e.g. "train.csv row 1234").

Sources (`data.source` in the config):
- `alexandria_json`: Alexandria dumps `alexandria_*.json.bz2` (JSON dict whose
  "entries" are ComputedStructureEntry dicts; id `data.mat_id` or `entry_id`,
  label `data.e_above_hull`). One file is loaded at a time (it is one JSON document).
- `alex20_csv`: CrystalFormer's Alex-20 CSVs (`zdcao/alex-20` train/val/test).
- `mp20_csv`: CDVAE-style MP-20 CSVs (`material_id, ..., e_above_hull, ..., cif`).
  Both CSV kinds share one liberal reader: id column among `material_id`, `id`,
  `mat_id`; structure in `cif` or `structure` (a CIF, or `str(Structure.as_dict())`
  as the public CrystalFormer code writes); `e_above_hull` if present.
- `cif_dir`: a folder, a glob or a `.tar.gz`/`.tgz`/`.tar` of `*.cif` (id = file stem).
- `demo`: the offline demo set: the real prototype crystals that ship inside
  pymatgen (`read_demo`).
"""
from __future__ import annotations

import bz2
import glob
import gzip
import json
import lzma
import math
import os
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

SOURCES = ("alexandria_json", "alex20_csv", "mp20_csv", "cif_dir", "demo")
ID_COLUMNS = ("material_id", "id", "mat_id")
STRUCTURE_COLUMNS = ("cif", "structure")
CSV_CHUNK_ROWS = 20_000


class Row(NamedTuple):
    """One raw input structure, before parsing.

    `structure` is CIF text, a `Structure.as_dict()` dict (or its `str()`), or a
    pymatgen `Structure`; `loc` names the file and row/member for error messages;
    `split` is the source's own split ("train", "val", "test") where it has one.
    """
    id: str
    source: str
    structure: Any
    e_above_hull: float
    loc: str
    split: str | None = None


SPLIT_NAMES = ("train", "val", "test")


def split_of_file(path: Path) -> str | None:
    """The split a file name says (`train.csv`, `val.csv.gz`, `alex20_test.csv`), or None."""
    stem = path.name.split(".")[0].lower()
    hits = [s for s in SPLIT_NAMES if stem == s or stem.endswith(("_" + s, "-" + s))]
    return hits[0] if len(hits) == 1 else None


def expand_paths(path: str | os.PathLike | Iterable, patterns: tuple[str, ...] = ("*",)) -> list[Path]:
    """A file, a folder (files matching `patterns`), a glob, or a list of these -> sorted files.

    Raises FileNotFoundError naming `path` when nothing matches.
    """
    if isinstance(path, (list, tuple)):
        out = [p for item in path for p in expand_paths(item, patterns)]
        return sorted(dict.fromkeys(out))
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted({f for pat in patterns for f in p.glob(pat) if f.is_file()})
    else:
        files = sorted(Path(f) for f in glob.glob(str(p)) if Path(f).is_file())
    if not files:
        raise FileNotFoundError(f"data.path {str(path)!r} matches no input files")
    return files


def _open_text(path: Path):
    """Open plain, .bz2, .gz or .xz files as text."""
    opener = {".bz2": bz2.open, ".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)
    return opener(path, "rt", encoding="utf-8")


def _float_or_nan(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def read_alexandria_json(path) -> Iterator[Row]:
    """Rows from Alexandria `alexandria_*.json.bz2` dumps (one file in memory at a time)."""
    for f in expand_paths(path, ("*.json.bz2", "*.json.gz", "*.json")):
        source = f"alexandria_json:{f.name}"
        with _open_text(f) as fh:
            doc = json.load(fh)
        entries = doc.get("entries", []) if isinstance(doc, dict) else doc
        for i, entry in enumerate(entries):
            data = entry.get("data", {}) if isinstance(entry, dict) else {}
            rid = data.get("mat_id") or (entry.get("entry_id") if isinstance(entry, dict) else None)
            rid = str(rid) if rid is not None else f"{f.name}#{i}"
            struct = entry.get("structure") if isinstance(entry, dict) else None
            yield Row(rid, source, struct, _float_or_nan(data.get("e_above_hull")),
                      f"{f.name} entry {i}")
        del doc, entries


def _pick(columns, wanted: tuple[str, ...]) -> str | None:
    low = {str(c).lower(): c for c in columns}
    return next((low[w] for w in wanted if w in low), None)


def read_csv_rows(path, kind: str = "alex20_csv", chunksize: int = CSV_CHUNK_ROWS) -> Iterator[Row]:
    """Rows from Alex-20 / MP-20-style CSVs, read in chunks of `chunksize` rows."""
    for f in expand_paths(path, ("*.csv", "*.csv.gz", "*.csv.bz2")):
        source = f"{kind}:{f.name}"
        first = 0
        for chunk in pd.read_csv(f, chunksize=chunksize, dtype=str, keep_default_na=False):
            if first == 0:
                id_col = _pick(chunk.columns, ID_COLUMNS)
                s_col = _pick(chunk.columns, STRUCTURE_COLUMNS)
                e_col = _pick(chunk.columns, ("e_above_hull",))
                split_col = _pick(chunk.columns, ("split",))
                if s_col is None:
                    raise ValueError(f"{f}: no structure column; expected one of "
                                     f"{list(STRUCTURE_COLUMNS)}, found {list(chunk.columns)}")
            ids = chunk[id_col].tolist() if id_col else [None] * len(chunk)
            structs = chunk[s_col].tolist()
            ehull = chunk[e_col].tolist() if e_col else [math.nan] * len(chunk)
            splits = (chunk[split_col].str.strip().str.lower().tolist() if split_col
                      else [split_of_file(f)] * len(chunk))
            for k, (rid, s, e, sp) in enumerate(zip(ids, structs, ehull, splits)):
                r = first + k
                rid = str(rid) if rid not in (None, "") else f"{f.name}#{r}"
                # row numbers are 0-based data rows (the header is not counted)
                yield Row(rid, source, s, _float_or_nan(e), f"{f.name} row {r}", sp or None)
            first += len(chunk)


def read_alex20_csv(path, chunksize: int = CSV_CHUNK_ROWS) -> Iterator[Row]:
    return read_csv_rows(path, "alex20_csv", chunksize)


def read_mp20_csv(path, chunksize: int = CSV_CHUNK_ROWS) -> Iterator[Row]:
    return read_csv_rows(path, "mp20_csv", chunksize)


def _is_tarball(p: Path) -> bool:
    return p.is_file() and (p.name.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")))


def read_cif_dir(path) -> Iterator[Row]:
    """Rows from a folder / glob of `.cif` files or a tarball of them (id = file stem)."""
    p = Path(path) if not isinstance(path, (list, tuple)) else None
    if p is not None and _is_tarball(p):
        source = f"cif_dir:{p.name}"
        with tarfile.open(p, "r:*") as tar:
            for member in tar:  # streaming: members in archive order
                if not (member.isfile() and member.name.lower().endswith(".cif")):
                    continue
                name = Path(member.name)
                text = tar.extractfile(member).read().decode("utf-8", errors="replace")
                yield Row(name.stem, source, text, math.nan, f"{p.name}:{member.name}")
        return
    for f in expand_paths(path, ("*.cif",)):
        yield Row(f.stem, f"cif_dir:{f.parent.name}", f.read_text(errors="replace"),
                  math.nan, str(f))


# ---------------------------------------------------------------- demo
DEMO_SOURCE = "demo:aflow_prototypes"
DEMO_MAX_ATOMS = 20


def read_demo(max_atoms: int = DEMO_MAX_ATOMS) -> Iterator[Row]:
    """The offline demo set as `Row`s (structure = pymatgen `Structure`).

    What it is: the structures of pymatgen's `AFLOW_PROTOTYPE_LIBRARY` (the AFLOW
    Library of Crystallographic Prototypes, Mehl et al. 2017 / Hicks et al. 2019, as
    bundled in `pymatgen/analysis/prototypes`), keeping those with at most 20 atoms in
    the stored cell: **250 of the 288 prototypes, 90 space groups (spglib, symprec
    0.1), 67 elements**, all ordered. Each prototype is decorated with the elements of
    its archetype compound (e.g. `AB_cF8_225_a_b` is NaCl), so these are genuine
    crystal structures, not random ones. No energies: `e_above_hull` is NaN.

    Why: the demo run must go through the whole DAG on a machine that only reaches the
    package index, so its data must install with the dependencies.

    Ids are `aflow:<AFLOW label>`; nine labels occur twice in the library (different
    archetypes of one prototype), the second occurrence gets `aflow:<label>.2`. The
    order is the library's, so the set and its ids are deterministic.
    """
    from pymatgen.analysis.prototypes import AFLOW_PROTOTYPE_LIBRARY  # loads a bundled json

    seen: Counter[str] = Counter()
    for i, proto in enumerate(AFLOW_PROTOTYPE_LIBRARY):
        label = proto["tags"]["aflow"]
        seen[label] += 1
        structure = proto["snl"].structure
        if len(structure) > max_atoms:
            continue
        rid = f"aflow:{label}" if seen[label] == 1 else f"aflow:{label}.{seen[label]}"
        yield Row(rid, DEMO_SOURCE, structure, math.nan,
                  f"pymatgen AFLOW_PROTOTYPE_LIBRARY entry {i} ({label})")


def read_source(source: str, path=None) -> Iterator[Row]:
    """Dispatch on `data.source`; raises ValueError naming the key when it is wrong."""
    if source not in SOURCES:
        raise ValueError(f"data.source: unknown source {source!r}; expected one of {list(SOURCES)}")
    if source == "demo":
        return read_demo()
    if path in (None, "", []):
        raise ValueError(f"data.path: required for data.source={source!r} (a file, folder, "
                         f"glob or tarball)")
    if not (isinstance(path, (str, os.PathLike)) and _is_tarball(Path(path))):
        expand_paths(path)  # fail now, naming data.path, rather than at the first row
    reader = {"alexandria_json": read_alexandria_json, "alex20_csv": read_alex20_csv,
              "mp20_csv": read_mp20_csv, "cif_dir": read_cif_dir}[source]
    return reader(path)
