"""Figures and tables of a run (the paper's Figs. 2-6 and tables)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from crystalrl.report import figures, tables


def model_of(path: str | Path) -> str:
    """results/{run}/eval/{model}/{set}.parquet -> model."""
    return Path(path).parent.name


def build_report(*, sun_csv, eval_paths, pretrain_metrics, sft_metrics, ppo_metrics, ppo_runs,
                 out_figures: dict, out_tables_dir, stable: float = 0.1) -> None:
    """Write the figures named in `out_figures` and the tables into `out_tables_dir`."""
    evals = {"dist": {}, "per_sg": {}}
    for p in eval_paths:
        evals[Path(p).stem][model_of(p)] = pd.read_parquet(p)
    curves = {"base": pd.read_parquet(pretrain_metrics)}
    if sft_metrics:
        curves["sft"] = pd.read_parquet(sft_metrics[0])
    figures.pretrain_curves(curves, out_figures["pretrain"])
    figures.ppo_curves({n: pd.read_parquet(p) for n, p in zip(ppo_runs, ppo_metrics)}, out_figures["ppo"])
    figures.ehull_histograms(evals["dist"], out_figures["ehull"], stable=stable)
    sun = pd.read_csv(sun_csv)
    figures.sun_per_spacegroup(sun, out_figures["sun"])

    out = Path(out_tables_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables.write_table(tables.overall(evals["dist"]), out / "overall")
    tables.write_table(sun, out / "sun_by_spacegroup")
    tables.write_table(tables.validity(evals["dist"]), out / "validity")
