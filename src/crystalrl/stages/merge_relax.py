"""Stage `merge_relax`: the relaxed chunks of one sample set -> one table, in sample order.

inputs: chunks (in chunk order); outputs: relaxed.
"""
from __future__ import annotations

import pandas as pd

from crystalrl.io import write_parquet_atomic


def run(inputs, outputs, params, log, threads=1) -> None:
    df = pd.concat([pd.read_parquet(p) for p in inputs.chunks], ignore_index=True)
    write_parquet_atomic(df, outputs.relaxed)
    log.info("%d chunks, %d rows -> %s", len(inputs.chunks), len(df), outputs.relaxed)
