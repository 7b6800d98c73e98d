"""Stage `report_dielectric`: Fig. 6 (Pareto scatter, e_hull histograms) and the top candidates table.

params: stable (threshold), matcher, match_spacegroup (evaluate's); inputs: preds
(dielectric/{model}.parquet, base first), dfpt (the DFPT set the dielectric models learned
from); outputs: scatter, ehull (figures), table.

The table is the paper's Table E, traceable: each row names its model and sample id, carries
the crystal, and says whether it is in the training split and in the DFPT set (StructureMatcher,
as novelty).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from crystalrl.evaluate.matching import NoveltyIndex
from crystalrl.report import figures, tables
from crystalrl.structures import parse_many


def run(inputs, outputs, params, log, threads=1) -> None:
    preds = {Path(p).stem: pd.read_parquet(p) for p in inputs.preds}
    figures.dielectric_scatter(preds, outputs.scatter)
    figures.ehull_histograms(preds, outputs.ehull, stable=params["stable"],
                             title="Energy above hull: base vs FoM fine-tuned samples")
    fine_tuned = pd.concat([d.assign(model=m) for m, d in preds.items() if m != "base"]
                           or [preds["base"].assign(model="base")])
    top = tables.dielectric_candidates(fine_tuned, e_hull_max=params["stable"])
    if len(top) and "cif" in top:
        # every row of the DFPT file, as the dielectric stages read it (no torch here: the data env)
        dfpt, _bad = parse_many(pd.read_json(inputs.dfpt, orient="split")["structure"].tolist())
        dfpt = [x for x in dfpt if x is not None]
        # only crystals of the candidates' formulas can match: the index writes each reference as CIF
        formulas = set(top["formula"])
        known = NoveltyIndex([x for x in dfpt if x.composition.reduced_formula in formulas], params["matcher"],
                             params["match_spacegroup"])
        structures, _why = parse_many(top["cif"].tolist())
        top.insert(top.columns.get_loc("cif"), "in_dfpt_set", ~np.asarray(known.is_novel(structures), bool))
        log.info("%d of %d top candidates are in the DFPT set (%d structures)", int(top["in_dfpt_set"].sum()),
                 len(top), len(dfpt))
    written = tables.write_table(top, Path(outputs.table).with_suffix(""))
    log.info("top %d candidates -> %s", len(top), written)
