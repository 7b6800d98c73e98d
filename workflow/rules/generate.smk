# Named generations (config `generate.<name>`): an ad-hoc target, not part of `all`.
# `snakemake results/{run}/generate/{name}.parquet` samples the sample set gen_<name> of the
# entry's model (rule sample, under its constraints), evaluates it (rule evaluate) and exports
# it like candidates (the candidates stage), into results/{run}/generate/{name}/.


rule generate:
    """N crystals of a named model under a named constraint set, scored and exported."""
    input:
        evals=generation_input("evals"),
        samples=generation_input("samples"),
    output:
        table=f"{R}/generate/{{name}}.parquet",
        folder=directory(f"{R}/generate/{{name}}"),
    log:
        f"{LOGS}/generate_{{name}}.log",
    benchmark:
        f"{BENCH}/generate_{{name}}.tsv"
    localrule: True
    conda:
        f"{ENVS}/data.yaml"
    params:
        candidates=config["candidates"],
        min_distance=config["evaluate"]["min_distance"],
        model_name=lambda w: w.name,
    script:
        "../scripts/candidates.py"
