"""Stage `tokenize`: data/{split}.parquet -> Wyckoff tokens + rejected rows (`crystalrl.tokenizer`).

params: tokenize (section), n_max (`model.n_max`); inputs.data; outputs: tokens, rejected.
The split is read and tokenized `BATCH_ROWS` rows at a time and the tokens written as they
come, so the job's memory does not grow with the split (Alex-20's train split: ~1 M rows).
"""
from __future__ import annotations

import contextlib

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crystalrl.config import section
from crystalrl.io import atomic_path, write_parquet_atomic
from crystalrl.tokenizer import tokenize_many

BATCH_ROWS = 20_000


def run(inputs, outputs, params, log, threads=1) -> None:
    cfg, n_max = section("tokenize", params["tokenize"]), int(params["n_max"])
    pf = pq.ParquetFile(inputs.data)
    missing = {"id", "cif"} - set(pf.schema_arrow.names)
    if missing:
        raise KeyError(f"{inputs.data}: missing column(s) {sorted(missing)}")
    columns = [c for c in ("id", "cif", "source") if c in pf.schema_arrow.names]
    n_tok, rejected = 0, []
    with contextlib.ExitStack() as stack:
        path = stack.enter_context(atomic_path(outputs.tokens))
        writer = None
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            data = batch.to_pandas()
            tokens, rej = tokenize_many(data["cif"].tolist(), data["id"].tolist(), n_max=n_max,
                                        symprec=cfg["symprec"], tol=cfg["tol"], processes=threads,
                                        sources=data["source"].tolist() if "source" in data else None)
            rejected.append(rej)
            if len(tokens):
                table = pa.Table.from_pandas(tokens, preserve_index=False)
                if writer is None:
                    writer = stack.enter_context(pq.ParquetWriter(path, table.schema))
                writer.write_table(table.cast(writer.schema))
                n_tok += len(tokens)
        if writer is None:  # nothing tokenized: an empty table with the columns
            tokenize_many([], [], n_max=n_max)[0].to_parquet(path, index=False)
    rejected = pd.concat(rejected, ignore_index=True) if rejected else tokenize_many([], [], n_max=n_max)[1]
    for reason in rejected["reason"]:
        log.warning("rejected %s", reason)
    log.info("%s: %d tokenized, %d rejected (n_max=%d, symprec=%g, tol=%g)",
             inputs.data, n_tok, len(rejected), n_max, cfg["symprec"], cfg["tol"])
    write_parquet_atomic(rejected, outputs.rejected)
