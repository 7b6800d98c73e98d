"""Stages `curate_shard` and `curate`: a data source -> train/val/test/rejected Parquets
(`crystalrl.data.curate`), in shards of bounded memory.

`curate_shard` (params: data, n_max, shard; outputs: kept, rejected) parses and filters
the rows of one shard (`data.n_shards` of them, by a hash of the id) and keeps only those
in memory. `curate` (inputs: kept, rejected, the shards' files; params: data; outputs:
train, val, test, rejected) removes structural duplicates across all shards, loading the
structures of only the rows whose formula and space group occur more than once, assigns
the splits and writes them shard by shard. Without shard inputs (tests, notebooks) it
parses the source itself as one shard and goes on the same way.
"""
from __future__ import annotations

import contextlib
import itertools

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crystalrl.config import section
from crystalrl.data.curate import (OUTPUT_COLUMNS, REJECTED_COLUMNS, SPLITS, _frame, assign_splits, common_reasons,
                                   parse_rows, source_splits, split_method, structural_duplicates)
from crystalrl.data.sources import read_source
from crystalrl.io import atomic_path, write_parquet_atomic

INDEX_COLUMNS = ["id", "source", "formula", "spacegroup", "split"]


def _rows(data):
    rows = read_source(data["source"], data["path"])
    return itertools.islice(rows, data["limit"]) if data["limit"] else rows  # quick runs on the first rows


def _parse(data, n_max, shard, threads, log):
    return parse_rows(_rows(data), max_atoms=data["max_atoms"], e_hull_max=data["e_hull_max"], n_max=int(n_max),
                      shard=shard, n_shards=data["n_shards"], processes=threads, logger=log)


def run_shard(inputs, outputs, params, log, threads=1) -> None:
    data = section("data", params["data"])
    kept, rejected = _parse(data, params["n_max"], int(params["shard"]), threads, log)
    write_parquet_atomic(kept, outputs.kept)
    write_parquet_atomic(rejected, outputs.rejected)


def run(inputs, outputs, params, log, threads=1) -> None:
    data = section("data", params["data"])
    parts = list(getattr(inputs, "kept", None) or [])
    rejected_parts = list(getattr(inputs, "rejected", None) or [])
    if not parts:  # no shard jobs before this one: the whole source, here
        kept, rejected = _parse({**data, "n_shards": 1}, params["n_max"], 0, threads, log)
        parts, rejected_parts = [kept], [rejected]

    def read(part, **kw):
        return part if isinstance(part, pd.DataFrame) else pd.read_parquet(part, **kw)

    index = pd.concat([read(p, columns=INDEX_COLUMNS) for p in parts], ignore_index=True)
    rejected = [read(p) for p in rejected_parts]
    dup_ids: set = set()
    if data["dedupe"]:
        def cifs_of(ids):
            return pd.concat([read(p)[lambda d: d["id"].isin(ids)] if isinstance(p, pd.DataFrame)
                              else pd.read_parquet(p, filters=[("id", "in", sorted(ids))]) for p in parts],
                             ignore_index=True)
        dups = structural_duplicates(index, cifs_of, processes=threads, logger=log)
        dup_ids = set(dups["id"])
        rejected.append(dups)
    rejected = pd.concat(rejected, ignore_index=True) if rejected else _frame([], REJECTED_COLUMNS)
    index = index[~index["id"].isin(dup_ids)]
    how = split_method(data["split_by"], source_splits(index))
    log.info("curate: split %s", "as the source gives it (its train/val/test files or split column)" if how == "source"
             else f"by a seeded hash of the id (seed {data['seed']}, fractions {list(data['split'])})")
    counts = assign_splits(index, how, split=tuple(data["split"]), seed=data["seed"])["split"].value_counts()
    counts = {name: int(counts.get(name, 0)) for name in SPLITS}
    if not all(counts.values()):
        for reason, n in common_reasons(rejected["reason"]):
            log.error("rejected %d row(s): %s", n, reason)
        raise ValueError(
            f"data source {data['source']!r} ({data['path'] or 'built in'}{', first ' + str(data['limit']) + ' rows' if data['limit'] else ''}) "
            f"left {', '.join(f'{k} {v}' for k, v in counts.items())} rows after curation ({len(rejected)} rejected; "
            "the most common reasons are in this log): every split needs rows. Point data.path at more data, "
            "raise data.limit, or loosen data.e_hull_max / data.max_atoms.")
    schema = pa.Schema.from_pandas(_frame([], OUTPUT_COLUMNS), preserve_index=False)
    with contextlib.ExitStack() as stack:  # one shard in memory at a time; each split file appears whole or not at all
        writers = {name: stack.enter_context(pq.ParquetWriter(stack.enter_context(atomic_path(getattr(outputs, name))),
                                                              schema)) for name in SPLITS}
        for part in parts:
            df = read(part)
            df = assign_splits(df[~df["id"].isin(dup_ids)], how, split=tuple(data["split"]), seed=data["seed"])
            for name in SPLITS:
                writers[name].write_table(pa.Table.from_pandas(df[df["split"] == name][OUTPUT_COLUMNS],
                                                               schema=schema, preserve_index=False))
    write_parquet_atomic(rejected, outputs.rejected)
    log.info("curate: %s from %d shard(s); %d rejected", ", ".join(f"{k} {v}" for k, v in counts.items()),
             len(parts), len(rejected))
