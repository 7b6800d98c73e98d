"""Stage `relax`: one chunk of samples -> MLIP-relaxed rows placed on the hull.

params: relax, mlip, hull (sections), chunk (int, 0-based, of relax.n_chunks);
inputs: samples, hull (files the hull is read from, maybe none); outputs: chunk.
Relaxations run batched on the device where the MLIP allows (`crystalrl.relax`);
a structure that fails or explodes is a marked row, never a failed job.
"""
from __future__ import annotations

import time

import pandas as pd

from crystalrl.hull import HullConfig, load_hull
from crystalrl.io import write_parquet_atomic
from crystalrl.mlip import MLIPConfig, load_mlip
from crystalrl.relax import RelaxConfig, choose_method, chunk_rows, relax_samples


def run(inputs, outputs, params, log, threads=1) -> None:
    relax_cfg = RelaxConfig.from_dict(params["relax"])
    mlip_cfg = MLIPConfig.from_dict(params["mlip"])
    hull_cfg = HullConfig.from_dict(params["hull"])
    chunk = int(params["chunk"])
    samples = pd.read_parquet(inputs.samples)
    part = samples.iloc[chunk_rows(len(samples), chunk, relax_cfg.n_chunks)].reset_index(drop=True)
    log.info("chunk %d of %d: %d of %d samples", chunk, relax_cfg.n_chunks, len(part), len(samples))
    mlip = load_mlip(mlip_cfg)
    hull = load_hull(hull_cfg)
    log.info("MLIP %r on %s, %s relaxation; hull %r", mlip, mlip.device, choose_method(mlip, relax_cfg), hull)
    t0 = time.perf_counter()
    df = relax_samples(part, mlip, hull, relax_cfg)
    log.info("relaxed %d/%d ok (%d converged) in %.1f s", (df["status"] == "ok").sum(), len(df),
             df["converged"].sum(), time.perf_counter() - t0)
    write_parquet_atomic(df, outputs.chunk)
