"""Stage `candidates`: one model's evaluated sample sets -> the hand-off folder
(`crystalrl.evaluate.candidates`: candidates.csv, CIFs, extxyz, MPRelaxSet inputs,
lemat_genbench.csv).

params: candidates (section), min_distance (`evaluate.min_distance`), model_name;
inputs: evals, samples (eval/{model}/{set}.parquet and samples/{model}/{set}.parquet,
in the same set order); outputs: folder, and for a named generation (rule generate) table:
the evaluation of every sample with its CIF.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from crystalrl.evaluate.candidates import CandidatesConfig, candidate_table, write_candidates
from crystalrl.io import atomic_dir, write_parquet_atomic


def run(inputs, outputs, params, log, threads=1) -> None:
    cfg = CandidatesConfig.from_dict(params["candidates"])
    evals = {Path(p).stem: pd.read_parquet(p) for p in inputs.evals}
    samples = {Path(p).stem: pd.read_parquet(p, columns=["sample_id", "cif"]) for p in inputs.samples}
    table = candidate_table(evals, samples, cfg)
    with atomic_dir(outputs.folder) as tmp:
        write_candidates(table, samples, params["model_name"], tmp, cfg, float(params["min_distance"]), log=log)
    if hasattr(outputs, "table"):  # a named generation: every sample's evaluation, with its CIF
        scored = pd.concat([ev.merge(samples[name], on="sample_id", how="left") for name, ev in evals.items()],
                           ignore_index=True)
        write_parquet_atomic(scored, outputs.table)
        log.info("%s: %d samples scored, %d candidates", params["model_name"], len(scored), len(table))
