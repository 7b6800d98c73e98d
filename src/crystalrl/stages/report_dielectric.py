"""Stage `report_dielectric`: Fig. 6 (Pareto scatter, e_hull histograms) and the top candidates table.

params: stable (threshold); inputs: preds (dielectric/{model}.parquet, base first);
outputs: scatter, ehull (figures), table.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from crystalrl.report import figures, tables


def run(inputs, outputs, params, log, threads=1) -> None:
    preds = {Path(p).stem: pd.read_parquet(p) for p in inputs.preds}
    figures.dielectric_scatter(preds, outputs.scatter)
    figures.ehull_histograms(preds, outputs.ehull, stable=params["stable"],
                             title="Energy above hull: base vs FoM fine-tuned samples")
    fine_tuned = pd.concat([d for m, d in preds.items() if m != "base"] or [preds["base"]])
    top = tables.dielectric_candidates(fine_tuned, e_hull_max=params["stable"])
    written = tables.write_table(top, Path(outputs.table).with_suffix(""))
    log.info("top %d candidates -> %s", len(top), written)
