# Figures and tables of the paper, wrapped for `snakemake --report report.html`.


rule report:
    """Paper figures (PNG) and tables (CSV + Markdown) of the run."""
    input:
        sun=f"{R}/sun_by_spacegroup.csv",
        evals=eval_targets(),
        pretrain_metrics=f"{R}/metrics/pretrain_base.parquet",
        sft_metrics=[f"{R}/metrics/sft.parquet"] if "sft" in MODELS else [],
        ppo_metrics=expand(f"{R}/metrics/ppo_{{name}}.parquet", name=PPO_RUNS),
    output:
        pretrain=report(f"{R}/figures/pretrain_loss.png", caption="../report/pretrain_loss.rst", category="Training"),
        ppo=report(f"{R}/figures/ppo_curves.png", caption="../report/ppo_curves.rst", category="Training"),
        ehull=report(f"{R}/figures/ehull_hist.png", caption="../report/ehull_hist.rst", category="Evaluation"),
        sun=report(f"{R}/figures/sun_per_spacegroup.png", caption="../report/sun_per_spacegroup.rst",
                   category="Evaluation"),
        tables=report(
            directory(f"{R}/tables"),
            patterns=["{name}.csv"],
            caption="../report/tables.rst",
            category="Tables",
        ),
    params:
        models=MODELS,
        ppo_runs=PPO_RUNS,
        stable=config["evaluate"]["stable_threshold"],
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        f"{ENVS}/data.yaml"
    script:
        "../scripts/report.py"


rule predict_dielectric:
    """Band gap, dielectric constant and FoM of the samples of one model (for Fig. 6)."""
    input:
        samples=f"{R}/samples/{{model}}/per_sg.parquet",
        eval=f"{R}/eval/{{model}}/per_sg.parquet",
        eps_model=f"{DIELECTRIC}/eps",
        gap_model=f"{DIELECTRIC}/gap",
    output:
        preds=f"{R}/dielectric/{{model}}.parquet",
    params:
        spacegroups=DIELECTRIC_SPACEGROUPS,
    threads: threads_for("mlip")
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    log:
        f"{LOGS}/predict_dielectric_{{model}}.log",
    benchmark:
        f"{BENCH}/predict_dielectric_{{model}}.tsv"
    conda:
        f"{ENVS}/mlip.yaml"
    script:
        "../scripts/predict_dielectric.py"


rule report_dielectric:
    """Fig. 6 and the table of top dielectric candidates (Appendix E)."""
    input:
        preds=expand(f"{R}/dielectric/{{model}}.parquet", model=DIELECTRIC_MODELS),
    output:
        scatter=report(f"{R}/figures/dielectric_pareto.png", caption="../report/dielectric.rst", category="Dielectric"),
        ehull=report(f"{R}/figures/dielectric_ehull_hist.png", caption="../report/dielectric.rst", category="Dielectric"),
        table=report(f"{R}/tables_dielectric/top_candidates.csv", caption="../report/dielectric.rst",
                     category="Dielectric"),
    params:
        stable=config["evaluate"]["stable_threshold"],
    log:
        f"{LOGS}/report_dielectric.log",
    benchmark:
        f"{BENCH}/report_dielectric.tsv"
    conda:
        f"{ENVS}/data.yaml"
    script:
        "../scripts/report_dielectric.py"
