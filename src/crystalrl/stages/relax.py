"""Stage `relax_chunk`: one chunk of a model's samples -> MLIP-relaxed rows placed on the hull.

params: relax, mlip, hull (sections), chunk (index); inputs: samples, hull (files);
outputs: chunk. Relaxations that fail are marked with their reason, never fatal.
"""
from __future__ import annotations

import time

import pandas as pd

from crystalrl.config import section
from crystalrl.hull import HullConfig, load_hull
from crystalrl.io import write_parquet_atomic
from crystalrl.mlip import MLIPConfig, load_mlip
from crystalrl.relax import chunk_rows, relax_samples


def run(inputs, outputs, params, log, threads=1) -> None:
    relax, chunk = section("relax", params["relax"]), int(params["chunk"])
    mlip_cfg = MLIPConfig.from_dict(params["mlip"])
    samples = pd.read_parquet(inputs.samples)
    part = samples.iloc[chunk_rows(len(samples), chunk, relax["n_chunks"])].reset_index(drop=True)
    log.info("chunk %s: %d of %d samples", chunk, len(part), len(samples))
    model = load_mlip(mlip_cfg)
    ref = load_hull(HullConfig.from_dict(params["hull"]))
    log.info("hull reference: %r", ref)
    t0 = time.perf_counter()
    df = relax_samples(part, model, ref, fmax=relax["fmax"], max_steps=relax["max_steps"],
                       batch_size=mlip_cfg.batch_size, fix_symmetry=relax["fix_symmetry"])
    log.info("relaxed %d/%d ok (%d converged) in %.1f s with %r", (df["status"] == "ok").sum(), len(df),
             df["converged"].sum(), time.perf_counter() - t0, model)
    write_parquet_atomic(df, outputs.chunk)
