# Evaluation: validity, e_hull as generated and relaxed, uniqueness, novelty, S.U.N. per space group.

if CHECK_WEIGHTS and CHECK_WEIGHTS != MLIP_WEIGHTS:

    # The second MLIP's weights (evaluate.cross_check_mlip), once, so that evaluate jobs never download.
    rule fetch_cross_check_weights:
        output:
            weights=CHECK_WEIGHTS,
        log:
            f"{LOGS}/fetch_cross_check_weights.log",
        benchmark:
            f"{BENCH}/fetch_cross_check_weights.tsv"
        retries: 2
        localrule: True  # runs where snakemake runs: downloads need the internet, which compute nodes often lack
        conda:
            f"{ENVS}/mlip.yaml"
        params:
            mlip=CHECK_MLIP,
            lock=config["inputs_lock"],
        script:
            "../scripts/fetch_mlip.py"


rule evaluate:
    """Per-sample validity, e_hull (MLIP + MP2020 + hull) as generated and relaxed, stable, unique,
    novel, S.U.N., SUN / MSUN, and the second MLIP's e_hull of the stable rows."""
    input:
        hull=hull_input(),
        mlip_weights=evaluate_mlip_input(),
        samples=rules.sample.output.samples,
        train=rules.curate.output.train,
    output:
        eval=f"{R}/eval/{{model}}/{{set}}.parquet",
    log:
        f"{LOGS}/evaluate_{{model}}_{{set}}.log",
    benchmark:
        f"{BENCH}/evaluate_{{model}}_{{set}}.tsv"
    conda:
        f"{ENVS}/mlip.yaml"
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        evaluate=evaluate_params(),
        mlip=mlip_params(),
        hull=hull_params(),
    script:
        "../scripts/evaluate.py"


EVALS = expand(rules.evaluate.output.eval, model=MODELS, set=SAMPLE_SETS)


rule sun_table:
    """S.U.N. table: a row per (model, space group) and a total row per model."""
    input:
        evals=EVALS,
        train_tokens=tokens("train"),
        train=rules.curate.output.train,
    output:
        table=f"{R}/sun_by_spacegroup.csv",
    log:
        f"{LOGS}/sun_table.log",
    benchmark:
        f"{BENCH}/sun_table.tsv"
    conda:
        f"{ENVS}/data.yaml"
    resources:
        **rule_resources("sun_table"),
    script:
        "../scripts/sun_table.py"


# Light file writing (CIFs, extxyz, MPRelaxSet inputs): on the submitting host, not a job.
rule candidates:
    """Candidates of one model to take further: table, CIFs, extxyz, DFT inputs, benchmark export."""
    input:
        evals=lambda w: expand(
            rules.evaluate.output.eval, model=w.model, set=SAMPLE_SETS
        ),
        samples=lambda w: expand(
            rules.sample.output.samples, model=w.model, set=SAMPLE_SETS
        ),
    output:
        folder=directory(f"{R}/candidates/{{model}}"),
    log:
        f"{LOGS}/candidates_{{model}}.log",
    benchmark:
        f"{BENCH}/candidates_{{model}}.tsv"
    localrule: True
    conda:
        f"{ENVS}/data.yaml"
    params:
        candidates=config["candidates"],
        min_distance=config["evaluate"]["min_distance"],
        model_name=lambda w: w.model,
    script:
        "../scripts/candidates.py"


# `snakemake results/sun_by_spacegroup.csv` builds the table of the configured run.
rule sun_table_default_run:
    input:
        rules.sun_table.output.table,
    output:
        "results/sun_by_spacegroup.csv",
    log:
        f"{LOGS}/sun_table_copy.log",
    benchmark:
        f"{BENCH}/sun_table_copy.tsv"
    localrule: True  # a copy, not worth a cluster job
    conda:
        f"{ENVS}/data.yaml"
    shell:
        "cp {input} {output} 2> {log}"
