"""Stage `evaluate`: per-sample validity, e_hull as generated, stable, unique, novel, S.U.N.,
then (LeMat-GenBench) e_hull after relaxation, SUN / MSUN, and a second-MLIP cross-check.

params: evaluate, mlip, hull (sections; `evaluate.cross_check_mlip` with its fetched
weights path); inputs: samples, train (curated train split, the novelty reference), hull
(files, maybe none), MLIP weights; outputs: eval.
Validity is computed once per sample and shared by the e_hull scoring and the table.
A relaxation that fails keeps its row (NaN, the reason appended to `reason`).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from crystalrl.ehull import energy_and_e_hull_as_generated
from crystalrl.evaluate.relaxed import check_agreement, cross_check, relax_and_score, relax_config, sun_relaxed
from crystalrl.evaluate.sun import METRICS, RELAXED, EvaluateConfig, evaluate_samples
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
    n = len(structures)
    e_hull, energy = np.full(n, np.nan), np.full(n, np.nan)
    mlip = hull = None
    if val["valid_struct"].any():
        mlip = load_mlip(MLIPConfig.from_dict(params["mlip"]))
        hull = load_hull(HullConfig.from_dict(params["hull"]))
        energy, e_hull, _status = energy_and_e_hull_as_generated(structures, mlip, hull,
                                                                 valid_struct=val["valid_struct"].to_numpy())
    log.info("e_hull for %d of %d samples", int(np.isfinite(e_hull).sum()), n)
    out = evaluate_samples(samples, e_hull=e_hull, config=cfg, train_df=pd.read_parquet(inputs.train),
                           structures=structures, validity=val, processes=threads)

    todo = out["valid"].to_numpy(dtype=bool) & np.isfinite(e_hull) if cfg.relax["enabled"] else np.zeros(n, bool)
    t0 = time.perf_counter()
    rel = relax_and_score(structures, todo, mlip, hull, relax_config(cfg.relax), cfg.matcher,
                          energy_n=energy)
    log.info("relaxed %d of %d samples in %.1f s: %d with a relaxed e_hull, %d converged", int(todo.sum()), n,
             time.perf_counter() - t0, int(np.isfinite(rel["e_hull_relaxed"]).sum()), int(rel["relax_converged"].sum()))
    for col in ("e_hull_relaxed", "rmsd_relax", "relax_converged", "cif_relaxed"):
        out[col] = rel[col].to_numpy()
    out["sun_relaxed"], out["msun_relaxed"] = sun_relaxed(out, out["e_hull_relaxed"].to_numpy(),
                                                          cfg.sun_threshold, cfg.msun_threshold)

    check = pd.DataFrame({"e_hull_check": np.full(n, np.nan), "check_agrees": False, "check_flag": False})
    if cfg.cross_check_mlip is not None and mlip is not None:
        second = load_mlip(MLIPConfig.from_dict(cfg.cross_check_mlip))
        relaxed, _ = parse_many([c if isinstance(c, str) else None for c in out["cif_relaxed"]])
        check = cross_check(structures, relaxed, e_hull, out["e_hull_relaxed"].to_numpy(), second, hull,
                            stable_threshold=cfg.stable_threshold, tolerance=cfg.cross_check_tolerance)
        n_checked, agree, n_flagged = check_agreement(check)
        log.info("cross-check with %r: %d rows, both MLIPs agree on stable for %.3f, %d differ by > %g eV/atom",
                 second, n_checked, agree, n_flagged, cfg.cross_check_tolerance)
    for col in check:
        out[col] = check[col].to_numpy()
    out["reason"] = ["; ".join(r for r in (a, b) if r) for a, b in zip(out.pop("reason"), rel["relax_reason"])]
    log.info("valid %.3f stable %.3f unique %.3f novel %.3f sun %.3f sun_relaxed %.3f msun_relaxed %.3f (n=%d)",
             *(out[m].mean() if len(out) else np.nan for m in METRICS + RELAXED), len(out))
    write_parquet_atomic(out, outputs.eval)
