"""Rule `report`: the paper's figures and tables of this run."""
from crystalrl.io import get_logger
from crystalrl.report import build_report


def main(snakemake):
    log = get_logger("report", snakemake.log[0])
    build_report(
        sun_csv=snakemake.input.sun,
        eval_paths=list(snakemake.input.evals),
        pretrain_metrics=snakemake.input.pretrain_metrics,
        sft_metrics=list(snakemake.input.sft_metrics),
        ppo_metrics=list(snakemake.input.ppo_metrics),
        ppo_runs=list(snakemake.params.ppo_runs),
        out_figures={k: snakemake.output[k] for k in ("pretrain", "ppo", "ehull", "sun")},
        out_tables_dir=snakemake.output.tables,
        stable=snakemake.params.stable,
    )
    log.info("wrote figures %s and tables in %s", list(snakemake.output[:4]), snakemake.output.tables)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
