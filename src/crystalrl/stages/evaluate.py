"""Stage `evaluate`: per-sample validity, e_hull as generated, stable, unique, novel, S.U.N.

params: evaluate, mlip, hull (sections); inputs: samples, train (curated train split, the
novelty reference), hull (files, maybe none); outputs: eval.
Validity is computed once per sample and shared by the e_hull scoring and the table.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from crystalrl.ehull import e_hull_as_generated
from crystalrl.evaluate.sun import METRICS, EvaluateConfig, evaluate_samples
from crystalrl.evaluate.validity import validity_table
from crystalrl.hull import HullConfig, load_hull
from crystalrl.io import write_parquet_atomic
from crystalrl.mlip import MLIPConfig, load_mlip
from crystalrl.structures import parse_many


def run(inputs, outputs, params, log, threads=1) -> None:
    cfg = EvaluateConfig.from_dict(params["evaluate"])
    samples = pd.read_parquet(inputs.samples)
    ids = samples["sample_id"].tolist() if "sample_id" in samples else None
    structures, why = parse_many(samples["cif"].tolist(), ids)
    for w in why:
        if w:
            log.warning("%s", w)
    val = validity_table(structures, cfg.min_distance, cfg.min_volume, cfg.oxidation_states_set, cfg.strict)
    e_hull = np.full(len(structures), np.nan)
    if val["valid_struct"].any():
        mlip_cfg = MLIPConfig.from_dict(params["mlip"])
        e_hull, _status = e_hull_as_generated(structures, load_mlip(mlip_cfg),
                                              load_hull(HullConfig.from_dict(params["hull"])),
                                              valid_struct=val["valid_struct"].to_numpy())
    log.info("e_hull for %d of %d samples", int(np.isfinite(e_hull).sum()), len(e_hull))
    out = evaluate_samples(samples, e_hull=e_hull, config=cfg, train_df=pd.read_parquet(inputs.train),
                           structures=structures, validity=val, processes=threads)
    log.info("valid %.3f stable %.3f unique %.3f novel %.3f sun %.3f (n=%d)",
             *(out[m].mean() if len(out) else np.nan for m in METRICS), len(out))
    write_parquet_atomic(out, outputs.eval)
