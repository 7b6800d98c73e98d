"""Curation: parse, filter, deduplicate and split raw rows into train/val/test.

Rules, in the order they are applied to each row (the first that fails names the
reason in `rejected`, stage "curate"):
1. exact duplicate id -> the first row seen with that id is kept;
2. `e_above_hull >= e_hull_max` (strict `<` kept; only where labelled, NaN passes);
   checked before parsing, since most rows of a raw Alexandria dump fail it;
3. the structure parses with pymatgen (CIF, Structure dict or its str form);
4. ordered (no partial occupancies), every species an element H..Og (pymatgen reads
   an unknown symbol such as `Xx` as a dummy species), no two atoms closer than `crystalrl.structures.MIN_DISTANCE`;
5. `n_atoms <= max_atoms` (inclusive, default 20: Alex-20 and MP-20 keep <= 20 sites
   of the stored cell; set 19 for the paper's "fewer than 20");
6. the Wyckoff representation fits: the number of symmetry-inequivalent sites
   (spglib via pymatgen at symprec 0.01, the tokenizer's) must be `< n_max` (one
   slot is the stop token); the tokenizer rejects the rare leftovers itself;
7. structural duplicates (`dedupe=True`): within each (reduced formula, space group
   at symprec 0.1) group, pymatgen's `StructureMatcher` with default tolerances
   (ltol 0.2, stol 0.3, angle 5 deg, volume scaled) compares structures in id
   order; one matching an earlier-kept structure is rejected as its duplicate.

Split: the source's own where it has one (`data.split_by`: the authors' Alex-20
train/val/test files, or a `split` column), so that novelty is judged against what a
published model was trained on. Otherwise `u = blake2b(f"{seed}:{id}")` mapped to
[0, 1); train if u < 0.8, val if u < 0.9, else test. A row's split depends only on its
id and the seed, so adding or removing rows never moves another row between splits.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
import warnings
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from multiprocessing import get_context

import numpy as np
import pandas as pd

from crystalrl.data.sources import Row
from crystalrl.structures import MIN_DISTANCE, parse_structure, unknown_elements

SPLITS = ("train", "val", "test")
OUTPUT_COLUMNS = ["id", "source", "cif", "formula", "n_atoms", "spacegroup", "e_above_hull", "split"]
REJECTED_COLUMNS = ["id", "source", "stage", "reason"]
STAGE = "curate"
SPACEGROUP_SYMPREC = 0.1   # the `spacegroup` column (docs/artifacts.md)
WYCKOFF_SYMPREC = 0.01     # the tokenizer's symprec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filters:
    max_atoms: int = 20
    e_hull_max: float = 0.1
    n_max: int = 21


# ---------------------------------------------------------------- split
def hash_uniform(rid: str, seed: int = 42) -> float:
    """A uniform number in [0, 1) from `blake2b(f"{seed}:{rid}")` (first 8 bytes)."""
    digest = hashlib.blake2b(f"{seed}:{rid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_of(rid: str, seed: int = 42, split: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """The split ("train"/"val"/"test") of an id; depends on nothing but id, seed, fractions."""
    u = hash_uniform(rid, seed)
    edges = np.cumsum(split[:2])
    return SPLITS[int(np.searchsorted(edges, u, side="right"))]


def split_method(split_by: str, source_splits: list) -> str:
    """"source" or "hash": how `data.split_by` splits rows whose sources give `source_splits`."""
    given = [x for x in source_splits if x is not None]
    bad = sorted({x for x in given if x not in SPLITS})
    if bad:
        raise ValueError(f"data.split_by: the source's split column holds {bad}; expected {list(SPLITS)}")
    if split_by == "hash" or (split_by == "auto" and len(given) < len(source_splits)):
        if split_by == "auto" and given:
            log.warning("curate: %d of %d rows carry a source split and the others not: splitting all by hash",
                        len(given), len(source_splits))
        return "hash"
    if len(given) < len(source_splits):
        raise ValueError(f"data.split_by is 'source' but {len(source_splits) - len(given)} of "
                         f"{len(source_splits)} rows have no split (files named train/val/test, or a split column)")
    return "source"


def _check_split(split) -> tuple[float, float, float]:
    try:
        fr = tuple(float(x) for x in split)
    except TypeError as exc:
        raise ValueError(f"data.split: expected three fractions, got {split!r}") from exc
    if len(fr) != 3 or min(fr) < 0 or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise ValueError(f"data.split: expected three non-negative fractions summing to 1, got {split!r}")
    return fr


# ---------------------------------------------------------------- per row
def check_row(row: Row, f: Filters) -> tuple[dict | None, str | None]:
    """Parse and filter one row -> (output record, None) or (None, reason)."""
    where = f"{row.loc} (id {row.id})"
    e = row.e_above_hull
    if e is not None and not math.isnan(e) and e >= f.e_hull_max:
        return None, f"{where}: e_above_hull {e:.4g} eV/atom >= data.e_hull_max {f.e_hull_max}"
    try:
        s = parse_structure(row.structure)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a rejected row
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return None, f"{where}: could not parse structure: {msg}"
    if not s.is_ordered:
        return None, f"{where}: disordered structure (partial occupancies)"
    if bad := unknown_elements(s):
        return None, f"{where}: unknown element(s) {', '.join(sorted(set(bad)))} (not H..Og)"
    n = len(s)
    if n > f.max_atoms:
        return None, f"{where}: {n} atoms > data.max_atoms {f.max_atoms}"
    if n > 1 and not s.is_valid(tol=MIN_DISTANCE):
        return None, f"{where}: atoms closer than {MIN_DISTANCE} A"
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    try:
        sg = SpacegroupAnalyzer(s, symprec=SPACEGROUP_SYMPREC).get_space_group_number()
        # orbits = distinct `equivalent_atoms`, what get_symmetrized_structure() groups
        # by, without its extra spglib call
        ds = SpacegroupAnalyzer(s, symprec=WYCKOFF_SYMPREC).get_symmetry_dataset()
        n_ineq = len(set(ds.equivalent_atoms))
    except Exception as exc:  # noqa: BLE001 - spglib failures are rejected rows
        return None, f"{where}: symmetry analysis failed: {exc}"
    if n_ineq >= f.n_max:
        return None, (f"{where}: {n_ineq} symmetry-inequivalent sites (symprec {WYCKOFF_SYMPREC}) "
                      f"do not fit data.n_max {f.n_max} (need < n_max)")
    return {"id": row.id, "source": row.source, "cif": s.to(fmt="cif"),
            "formula": s.composition.reduced_formula, "n_atoms": n, "spacegroup": int(sg),
            "e_above_hull": float(e) if e is not None else math.nan, "split": row.split}, None


def _process_chunk(rows: list[Row], f: Filters) -> tuple[list[dict], list[tuple]]:
    kept, rejected = [], []
    for row in rows:
        with warnings.catch_warnings():  # pymatgen/spglib warnings would flood the log
            warnings.simplefilter("ignore")
            rec, reason = check_row(row, f)
        if rec is None:
            rejected.append((row.id, row.source, STAGE, reason))
        else:
            kept.append(rec)
    return kept, rejected


def _dedupe_groups(groups: list[list[dict]]) -> list[tuple]:
    """Within each group (same formula + space group, sorted by id) reject later matches."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

    sm = StructureMatcher()
    rejected = []
    for group in groups:
        reps: list[tuple[str, Structure]] = []
        for rec in group:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = parse_structure(rec["cif"])
                dup = next((rid for rid, r in reps if sm.fit(r, s)), None)
            if dup is None:
                reps.append((rec["id"], s))
            else:
                rejected.append((rec["id"], rec["source"], STAGE,
                                 f"id {rec['id']}: structural duplicate of {dup} "
                                 f"({rec['formula']}, space group {rec['spacegroup']}; "
                                 f"StructureMatcher defaults)"))
    return rejected


def common_reasons(reasons: Iterable[str], n: int = 5) -> list[tuple[str, int]]:
    """The `n` most frequent rejection reasons, with the row and its numbers taken out, and their counts."""
    import re

    generic = (re.sub(r"[-+]?\d[\d.e+-]*", "#", r.split("): ", 1)[-1]) for r in reasons)
    counts: dict[str, int] = defaultdict(int)
    for g in generic:
        counts[g] += 1
    return sorted(counts.items(), key=lambda kv: -kv[1])[:n]


# ---------------------------------------------------------------- driver
def _chunks(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


def _ordered_map(fn: Callable, arg_iter: Iterable[tuple], pool, window: int) -> Iterator:
    """Like `pool.map` but submits lazily (at most `window` tasks in flight).

    `Executor.map` would consume the whole input first: 1.3 M rows of CIF text.
    """
    if pool is None:
        for args in arg_iter:
            yield fn(*args)
        return
    pending: deque = deque()
    for args in arg_iter:
        pending.append(pool.submit(fn, *args))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _frame(records: list[dict], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records, columns=columns)
    dtypes = {"id": "string", "source": "string", "cif": "string", "formula": "string",
              "n_atoms": "int64", "spacegroup": "int64", "e_above_hull": "float64",
              "split": "string", "stage": "string", "reason": "string"}
    return df.astype({c: dtypes[c] for c in columns})


def _mp_context():
    """A forkserver whose server has pymatgen/spglib imported once.

    Workers fork from that clean server: no per-worker import cost (several seconds
    each, as with "spawn") and no fork of a parent that may hold JAX/torch threads.
    """
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(["crystalrl.data.curate", "pymatgen.core", "pymatgen.io.cif",
                                "pymatgen.symmetry.analyzer",
                                "pymatgen.analysis.structure_matcher"])
    return ctx


def shard_of(rid: str, n_shards: int) -> int:
    """The curation shard of a row id (a hash of the id alone, so every copy of an id meets in one shard)."""
    return int(hash_uniform(rid, "shard") * n_shards)


def parse_rows(rows: Iterable[Row], *, max_atoms: int = 20, e_hull_max: float = 0.1, n_max: int = 21,
               shard: int = 0, n_shards: int = 1, processes: int = 1, chunk_size: int = 64,
               logger: logging.Logger | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rules 1-6 on the rows of shard `shard` of `n_shards` -> (kept, rejected), kept sorted by id.

    Streams `rows` and keeps in memory only this shard's records, so a shard job's
    memory is about 1/n_shards of the data set's. Duplicate ids all fall into one
    shard (`shard_of`), where the first row with an id is kept, as unsharded.
    """
    lg = logger or log
    f = Filters(int(max_atoms), float(e_hull_max), int(n_max))
    processes = max(1, int(processes))
    pool = ProcessPoolExecutor(processes, mp_context=_mp_context()) if processes > 1 else None
    kept: list[dict] = []
    rejected: list[tuple] = []
    seen: set[str] = set()
    t0, n_mine = time.time(), 0

    def unique_chunks():
        nonlocal n_mine
        mine = (r for r in rows if n_shards == 1 or shard_of(r.id, n_shards) == shard)
        for chunk in _chunks(mine, chunk_size):
            n_mine += len(chunk)
            fresh = []
            for r in chunk:
                if r.id in seen:
                    rejected.append((r.id, r.source, STAGE,
                                     f"{r.loc} (id {r.id}): duplicate id; the first row with it is kept"))
                else:
                    seen.add(r.id)
                    fresh.append(r)
            yield fresh, f

    try:
        for i, (k, rj) in enumerate(_ordered_map(_process_chunk, unique_chunks(), pool, 2 * processes)):
            kept.extend(k)
            rejected.extend(rj)
            if i % 50 == 49:
                lg.info("curate: shard %d/%d: %d rows, %d kept, %d rejected (%.0f rows/s)", shard, n_shards,
                        n_mine, len(kept), len(rejected), n_mine / max(time.time() - t0, 1e-9))
    finally:
        if pool is not None:
            pool.shutdown()
    lg.info("curate: shard %d/%d: parsed %d rows in %.1f s: %d pass the filters, %d rejected",
            shard, n_shards, n_mine, time.time() - t0, len(kept), len(rejected))
    return (_frame(kept, OUTPUT_COLUMNS).sort_values("id", ignore_index=True),
            _frame([dict(zip(REJECTED_COLUMNS, r)) for r in rejected], REJECTED_COLUMNS))


def structural_duplicates(index: pd.DataFrame, cifs_of: Callable[[set[str]], pd.DataFrame], *,
                          processes: int = 1, logger: logging.Logger | None = None) -> pd.DataFrame:
    """Rule 7 over every shard at once -> the rejected rows (structural duplicates).

    `index` holds id, source, formula, spacegroup of every kept row (small: no structures);
    `cifs_of(ids)` returns those rows with their `cif`: only rows whose formula and space
    group occur more than once are ever loaded.
    """
    lg = logger or log
    counts = index.groupby(["formula", "spacegroup"])["id"].transform("size")
    need = set(index.loc[counts > 1, "id"])
    if not need:
        lg.info("curate: no formula/space-group group has more than one member")
        return _frame([], REJECTED_COLUMNS)
    rows = cifs_of(need)
    groups = [sorted(g.to_dict("records"), key=lambda r: r["id"]) for _, g in rows.groupby(["formula", "spacegroup"])]
    processes = max(1, int(processes))
    pool = ProcessPoolExecutor(processes, mp_context=_mp_context()) if processes > 1 else None
    rejected: list[tuple] = []
    try:
        for rj in _ordered_map(_dedupe_groups, ((c,) for c in _chunks(groups, 64)), pool, 2 * processes):
            rejected.extend(rj)
    finally:
        if pool is not None:
            pool.shutdown()
    lg.info("curate: %d structural duplicates removed (%d formula/space-group groups with more than one member)",
            len(rejected), len(groups))
    return _frame([dict(zip(REJECTED_COLUMNS, r)) for r in rejected], REJECTED_COLUMNS)


def source_splits(kept: pd.DataFrame) -> list:
    """The source's split of every kept row (None where the source gives none)."""
    return [None if pd.isna(x) else str(x) for x in kept["split"]]


def assign_splits(kept: pd.DataFrame, how: str, *, split=(0.8, 0.1, 0.1), seed: int = 42) -> pd.DataFrame:
    """`kept` with its `split` column set: the source's (`how` "source") or the id hash's."""
    if how == "hash":
        fr = _check_split(split)
        kept = kept.assign(split=pd.array([split_of(rid, seed, fr) for rid in kept["id"]], dtype="string"))
    return kept


def curate(rows: Iterable[Row], *, max_atoms: int = 20, e_hull_max: float = 0.1, n_max: int = 21,
           split: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 42, dedupe: bool = True,
           split_by: str = "auto", processes: int = 1, chunk_size: int = 64,
           logger: logging.Logger | None = None) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Curate raw `rows` in one piece (see module docstring) -> ({"train","val","test"}: frames, rejected).

    The steps the workflow runs as shard jobs and a merge (`parse_rows`,
    `structural_duplicates`, `assign_splits`), in one process: each split frame has the
    columns of `OUTPUT_COLUMNS`, sorted by id; `rejected` has `id, source, stage, reason`.
    `processes > 1` parses in that many worker processes, `chunk_size` rows per task.
    """
    lg = logger or log
    _check_split(split)
    kept, rejected = parse_rows(rows, max_atoms=max_atoms, e_hull_max=e_hull_max, n_max=n_max,
                                processes=processes, chunk_size=chunk_size, logger=lg)
    parts = [rejected]
    if dedupe:
        dups = structural_duplicates(kept[["id", "source", "formula", "spacegroup"]],
                                     lambda ids: kept[kept["id"].isin(ids)], processes=processes, logger=lg)
        kept = kept[~kept["id"].isin(set(dups["id"]))].reset_index(drop=True)
        parts.append(dups)
    how = split_method(split_by, source_splits(kept))
    lg.info("curate: split %s", "as the source gives it (its train/val/test files or split column)"
            if how == "source" else f"by a seeded hash of the id (seed {seed}, fractions {list(split)})")
    kept = assign_splits(kept, how, split=split, seed=seed)
    splits = {name: kept[kept["split"] == name].reset_index(drop=True) for name in SPLITS}
    rej = pd.concat(parts, ignore_index=True)
    lg.info("curate: %s; %d rejected", ", ".join(f"{k} {len(v)}" for k, v in splits.items()), len(rej))
    return splits, rej
