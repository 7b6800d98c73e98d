# Evaluation: validity, e_hull as generated, uniqueness, novelty, S.U.N. per space group.


rule evaluate:
    """Per-sample validity, e_hull (MLIP + MP2020 + hull), stable, unique, novel, S.U.N."""
    input:
        hull_input,
        samples=f"{R}/samples/{{model}}/{{set}}.parquet",
        train=f"{R}/data/train.parquet",
    output:
        eval=f"{R}/eval/{{model}}/{{set}}.parquet",
    params:
        evaluate={k: v for k, v in config["evaluate"].items() if k != "models"},
        mlip=config["mlip"],
        hull=hull_params(),
    threads: threads_for("evaluate")
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=480,
    log:
        f"{LOGS}/evaluate_{{model}}_{{set}}.log",
    benchmark:
        f"{BENCH}/evaluate_{{model}}_{{set}}.tsv"
    conda:
        f"{ENVS}/mlip.yaml"
    script:
        "../scripts/evaluate.py"


rule sun_table:
    """S.U.N. table: a row per (model, space group) and a total row per model."""
    input:
        evals=eval_targets(),
        train_tokens=f"{R}/data/tokens_train.parquet",
    output:
        table=f"{R}/sun_by_spacegroup.csv",
    log:
        f"{LOGS}/sun_table.log",
    benchmark:
        f"{BENCH}/sun_table.tsv"
    conda:
        f"{ENVS}/data.yaml"
    script:
        "../scripts/sun_table.py"


rule sun_table_default_run:
    """`snakemake results/sun_by_spacegroup.csv` builds the table of the configured run."""
    input:
        f"{R}/sun_by_spacegroup.csv",
    output:
        "results/sun_by_spacegroup.csv",
    log:
        f"{LOGS}/sun_table_copy.log",
    benchmark:
        f"{BENCH}/sun_table_copy.tsv"
    conda:
        f"{ENVS}/data.yaml"
    shell:
        "cp {input} {output} 2> {log}"
