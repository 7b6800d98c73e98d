"""Stage `sft_data`: relaxed base samples that are stable after relaxation -> SFT training rows.

params: e_hull_max; inputs: relaxed; outputs: data (id, cif rows for the tokenizer).
"""
from __future__ import annotations

import pandas as pd

from crystalrl.io import write_parquet_atomic


def select_stable(relaxed: pd.DataFrame, e_hull_max: float) -> pd.DataFrame:
    """Relaxed structures with e_hull_final < e_hull_max, as (id, cif) rows to tokenize."""
    ok = relaxed["status"].eq("ok") & (relaxed["e_hull_final"] < e_hull_max)
    keep = relaxed.loc[ok, ["sample_id", "cif_relaxed"]]
    return pd.DataFrame({"id": keep["sample_id"].astype(str), "cif": keep["cif_relaxed"]})


def run(inputs, outputs, params, log, threads=1) -> None:
    relaxed = pd.read_parquet(inputs.relaxed)
    e_max = float(params["e_hull_max"])
    data = select_stable(relaxed, e_max)
    log.info("%d of %d relaxed samples have e_hull < %.3f eV/atom", len(data), len(relaxed), e_max)
    if data.empty:
        raise ValueError(f"{inputs.relaxed}: no relaxed sample is stable (e_hull < {e_max}); "
                         "nothing to fine-tune on")
    write_parquet_atomic(data, outputs.data)
