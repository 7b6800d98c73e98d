# Figures and tables of the paper, wrapped for `snakemake --report report.html`.


rule report:
    """Paper figures (PNG) and tables (CSV + Markdown) of the run."""
    input:
        sun=rules.sun_table.output.table,
        evals=EVALS,
        pretrain_metrics=[] if BASE_FROM else [rules.pretrain.output.metrics],
        sft_metrics=[rules.sft.output.metrics] if "sft" in MODELS else [],
        ppo_metrics=expand(rules.ppo.output.metrics, name=PPO_RUNS),
        train=rules.curate.output.train,
    output:
        pretrain=report(
            f"{R}/figures/pretrain_loss.png",
            caption="../report/pretrain_loss.rst",
            category="Training",
        ),
        ppo=report(
            f"{R}/figures/ppo_curves.png",
            caption="../report/ppo_curves.rst",
            category="Training",
        ),
        ehull=report(
            f"{R}/figures/ehull_hist.png",
            caption="../report/ehull_hist.rst",
            category="Evaluation",
        ),
        sun=report(
            f"{R}/figures/sun_per_spacegroup.png",
            caption="../report/sun_per_spacegroup.rst",
            category="Evaluation",
        ),
        audit=report(
            f"{R}/figures/reward_audit.png",
            caption="../report/reward_audit.rst",
            category="Evaluation",
        ),
        tables=report(
            directory(f"{R}/tables"),
            patterns=["{name}.csv"],
            caption="../report/tables.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        f"{ENVS}/data.yaml"
    resources:
        **rule_resources("report"),
    params:
        ppo_runs=PPO_RUNS,
        stable=config["evaluate"]["stable_threshold"],
        evaluate={k: v for k, v in config["evaluate"].items() if k != "models"},
        mlip=config["mlip"],
        hull=config["hull"],
    script:
        "../scripts/report.py"
