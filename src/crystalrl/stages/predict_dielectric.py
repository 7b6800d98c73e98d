"""Stage `predict_dielectric`: band gap, dielectric constant and FoM of one model's samples (Fig. 6).

params: spacegroups (the FoM runs' groups; empty = all); inputs: samples, eval, eps_model,
gap_model; outputs: preds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from crystalrl.dielectric import DielectricPredictor
from crystalrl.io import write_parquet_atomic
from crystalrl.structures import parse_many


def predict_samples(samples: pd.DataFrame, evals: pd.DataFrame, predictor, spacegroups) -> pd.DataFrame:
    """FoM predictions of the decoded samples in `spacegroups`, joined with their e_hull and novelty."""
    s = samples[samples["G"].isin(spacegroups)] if spacegroups else samples
    structures, _why = parse_many(s["cif"].tolist())
    parsed = [st is not None for st in structures]  # undecoded samples have no FoM
    s, structures = s[parsed], [st for st in structures if st is not None]
    pred = predictor.predict(structures)
    out = pd.DataFrame({"sample_id": s["sample_id"].to_numpy(), "spacegroup": s["G"].to_numpy(),
                        "formula": [st.composition.reduced_formula for st in structures],
                        "band_gap": pred["band_gap"], "eps": pred["eps"], "fom": pred["fom"],
                        "status": pred["status"].astype(str), "cif": s["cif"].to_numpy()})
    keep = [c for c in ("sample_id", "e_hull", "novel") if c in evals]
    return out.merge(evals[keep], on="sample_id", how="left")


def run(inputs, outputs, params, log, threads=1) -> None:
    preds = predict_samples(pd.read_parquet(inputs.samples), pd.read_parquet(inputs.eval),
                            DielectricPredictor(inputs.eps_model, inputs.gap_model), list(params["spacegroups"]))
    log.info("%d samples, median FoM %.3f", len(preds), float(np.nanmedian(preds["fom"])) if len(preds) else np.nan)
    write_parquet_atomic(preds, outputs.preds)
