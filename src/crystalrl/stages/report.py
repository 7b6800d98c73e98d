"""Stage `report`: the paper's figures (PNG) and tables (CSV + Markdown) of a run.

inputs: sun (the S.U.N. table), evals, train (the curated train split: element frequencies of
the reward-hacking audit, `crystalrl.evaluate.audit`), pretrain_metrics (list; empty for an imported base), sft_metrics (list), ppo_metrics
(list, in the order of params.ppo_runs); params: ppo_runs, stable (threshold), and evaluate,
mlip, hull (sections: the stability table names its MLIPs, correction and hull);
outputs: pretrain, ppo, ehull, sun, audit (figures), tables (folder: overall, sun_by_spacegroup,
validity, stability, stability_definitions, distribution, reward_audit).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from crystalrl.evaluate.audit import audit_table
from crystalrl.evaluate.distribution import distribution_table
from crystalrl.report import figures, tables
from crystalrl.stages.sun_table import read_evals


def run(inputs, outputs, params, log, threads=1) -> None:
    evals = read_evals(inputs.evals)
    # no pretraining curve when the base model is a published checkpoint
    curves = {"base": pd.read_parquet(p) for p in inputs.pretrain_metrics}
    if inputs.sft_metrics:
        curves["sft"] = pd.read_parquet(inputs.sft_metrics[0])
    figures.pretrain_curves(curves, outputs.pretrain)
    figures.ppo_curves({n: pd.read_parquet(p) for n, p in zip(params["ppo_runs"], inputs.ppo_metrics)},
                       outputs.ppo)
    figures.ehull_histograms(evals["dist"], outputs.ehull, stable=params["stable"])
    sun = pd.read_csv(inputs.sun)
    figures.sun_per_spacegroup(sun, outputs.sun)

    out = Path(outputs.tables)
    out.mkdir(parents=True, exist_ok=True)
    tables.write_table(tables.overall(evals["dist"]), out / "overall")
    tables.write_table(sun, out / "sun_by_spacegroup")
    tables.write_table(tables.validity(evals["dist"]), out / "validity")
    if "evaluate" in params:
        tables.write_table(tables.stability(evals["dist"]), out / "stability")
        tables.write_table(tables.stability_definitions(params["evaluate"], params["mlip"], params["hull"]),
                           out / "stability_definitions")
    train = pd.read_parquet(inputs.train, columns=["formula", "spacegroup"])
    tables.write_table(distribution_table(evals["dist"], train), out / "distribution")
    audit = audit_table(evals["dist"], train["formula"].tolist())
    tables.write_table(audit, out / "reward_audit")
    figures.reward_audit(audit, outputs.audit)
    for row in audit.itertuples():
        log.info("reward-hacking audit, %s: %s", row.model, row.verdict)
    log.info("wrote figures %s and tables in %s",
             [outputs.pretrain, outputs.ppo, outputs.ehull, outputs.sun], outputs.tables)
