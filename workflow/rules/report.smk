# Figures and tables of the paper, wrapped for `snakemake --report`.


rule report:
    """Paper figures (PNG) and tables (CSV + Markdown) of the run."""
    input:
        sun=f"{R}/sun_by_spacegroup.csv",
        evals=eval_targets(),
        pretrain_metrics=f"{R}/metrics/pretrain_base.parquet",
        ppo_metrics=expand(f"{R}/metrics/ppo_{{name}}.parquet", name=PPO_RUNS),
    output:
        done=f"{R}/report/done.txt",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        f"{ENVS}/data.yaml"
    script:
        "../scripts/report.py"
