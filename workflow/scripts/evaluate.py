"""Snakemake script for rule `evaluate`: per-sample validity, e_hull, stable, unique, novel, S.U.N."""

import pandas as pd

from crystalrl.evaluate.sun import run_evaluation
from crystalrl.io import get_logger, set_threads, write_parquet_atomic


def main(snakemake) -> None:
    set_threads(snakemake.threads)
    log = get_logger("evaluate", snakemake.log[0] if snakemake.log else None)
    evaluate_cfg = dict(snakemake.params.evaluate)
    evaluate_cfg.setdefault("processes", snakemake.threads)
    out = run_evaluation(pd.read_parquet(snakemake.input.samples), pd.read_parquet(snakemake.input.train),
                         evaluate_cfg=evaluate_cfg, mlip_cfg=dict(snakemake.params.mlip),
                         hull_cfg=dict(snakemake.params.hull), logger=log)
    write_parquet_atomic(out, snakemake.output.eval)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
