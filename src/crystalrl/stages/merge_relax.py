"""Stage `merge_relax`: the relaxed chunks (in chunk order, which is the sample order) -> one table.

inputs: chunks (list); outputs: relaxed; params: none.
"""
from __future__ import annotations

import pandas as pd

from crystalrl.io import write_parquet_atomic


def run(inputs, outputs, params, log, threads=1) -> None:
    frames = [pd.read_parquet(p) for p in inputs.chunks]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    log.info("%d chunks, %d rows -> %s", len(frames), len(df), outputs.relaxed)
    write_parquet_atomic(df, outputs.relaxed)
