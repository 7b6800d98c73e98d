"""Stage `tokenize`: data/{split}.parquet -> Wyckoff tokens + rejected rows (`crystalrl.tokenizer`).

params: tokenize (section), n_max (`model.n_max`); inputs.data; outputs: tokens, rejected.
"""
from __future__ import annotations

import pandas as pd

from crystalrl.config import section
from crystalrl.io import write_parquet_atomic
from crystalrl.tokenizer import tokenize_many


def run(inputs, outputs, params, log, threads=1) -> None:
    cfg, n_max = section("tokenize", params["tokenize"]), int(params["n_max"])
    data = pd.read_parquet(inputs.data)
    missing = {"id", "cif"} - set(data.columns)
    if missing:
        raise KeyError(f"{inputs.data}: missing column(s) {sorted(missing)}")
    sources = data["source"].tolist() if "source" in data.columns else None
    tokens, rejected = tokenize_many(data["cif"].tolist(), data["id"].tolist(), n_max=n_max,
                                     symprec=cfg["symprec"], tol=cfg["tol"], processes=threads,
                                     sources=sources)
    for reason in rejected["reason"]:
        log.warning("rejected %s", reason)
    log.info("%s: %d tokenized, %d rejected (n_max=%d, symprec=%g, tol=%g)",
             inputs.data, len(tokens), len(rejected), n_max, cfg["symprec"], cfg["tol"])
    write_parquet_atomic(tokens, outputs.tokens)
    write_parquet_atomic(rejected, outputs.rejected)
