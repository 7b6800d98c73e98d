"""Stage `sun_table`: eval Parquets -> the S.U.N. table (CSV), a row per (model, set, space group).

inputs: evals (eval/{model}/{set}.parquet), train_tokens (the training space-group
distribution), train (the curated train split: the novelty reference, named in the
table's `novelty_reference` column); outputs: table. The `per_sg` set gives per-space-group rows and a total
re-weighted by the training distribution; the `dist` set (groups already drawn from it)
gives the pooled total, the paper's headline S.U.N. rate.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from crystalrl.evaluate.sun import sun_table
from crystalrl.io import write_text_atomic
from crystalrl.stages import SAMPLE_SETS


def read_evals(paths) -> dict[str, dict[str, pd.DataFrame]]:
    """eval/{model}/{set}.parquet files -> {set: {model: table}}."""
    out: dict[str, dict[str, pd.DataFrame]] = {s: {} for s in SAMPLE_SETS}
    for p in map(Path, paths):
        if p.stem not in SAMPLE_SETS:
            raise ValueError(f"{p}: not an eval/{{model}}/{{set}}.parquet file (sets: {SAMPLE_SETS})")
        out[p.stem][p.parent.name] = pd.read_parquet(p)
    return out


def novelty_reference(train_path) -> str:
    """What "novel" was judged against: the curated train split and where its rows came from."""
    if not train_path:
        return "the curated train split"
    src = pd.read_parquet(train_path, columns=["source"])["source"].value_counts()
    return f"train split, {int(src.sum())} curated rows of " + ", ".join(f"{k} ({v})" for k, v in src.items())


def run(inputs, outputs, params, log, threads=1) -> None:
    g = pd.read_parquet(inputs.train_tokens, columns=["G"])["G"].astype(int)
    weights = (g.value_counts() / len(g)).to_dict()
    parts = []
    for set_name, dfs in read_evals(inputs.evals).items():
        if not dfs:
            continue
        t = sun_table(dfs, sg_weights=weights if set_name == "per_sg" else None,
                      per_spacegroup=set_name != "dist")
        t.insert(1, "set", set_name)
        parts.append(t)
    table = pd.concat(parts, ignore_index=True)
    table["novelty_reference"] = novelty_reference(getattr(inputs, "train", None))
    write_text_atomic(table.to_csv(index=False), outputs.table)
    log.info("S.U.N. table: %d rows -> %s", len(table), outputs.table)
