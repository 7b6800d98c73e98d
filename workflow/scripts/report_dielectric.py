"""Rule `report_dielectric`: Fig. 6 (Pareto scatter, e_hull histograms) and top candidates."""
from pathlib import Path

import pandas as pd

from crystalrl.io import get_logger
from crystalrl.report import figures, tables


def main(snakemake):
    log = get_logger("report_dielectric", snakemake.log[0])
    preds = {Path(p).stem: pd.read_parquet(p) for p in snakemake.input.preds}
    figures.dielectric_scatter(preds, snakemake.output.scatter)
    figures.ehull_histograms(preds, snakemake.output.ehull, stable=snakemake.params.stable,
                             title="Energy above hull: base vs FoM fine-tuned samples")
    fine_tuned = pd.concat([d for m, d in preds.items() if m != "base"] or [preds["base"]])
    top = tables.dielectric_candidates(fine_tuned, e_hull_max=snakemake.params.stable)
    written = tables.write_table(top, Path(snakemake.output.table).with_suffix(""))
    log.info("top %d candidates -> %s", len(top), written)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
