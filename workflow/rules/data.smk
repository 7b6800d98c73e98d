# Data: download (where the source is remote) -> curate -> tokenize.


if config["data"]["urls"]:

    rule download_data:
        """Fetch the data source (e.g. HF alex-20 CSVs) with retries and checksums."""
        localrule: True  # runs where snakemake runs: downloads need the internet, which compute nodes often lack
        output:
            path=directory(config["data"]["path"]),
        params:
            urls=config["data"]["urls"],
            sha256=config["data"]["sha256"],
            lock=config["inputs_lock"],
        log:
            f"{LOGS}/download_data.log",
        benchmark:
            f"{BENCH}/download_data.tsv"
        conda:
            f"{ENVS}/data.yaml"
        retries: 2
        script:
            "../scripts/download.py"


rule curate:
    """Parse, filter (e_hull, atoms, n_max), deduplicate and split (the source's own, else 80/10/10 by id hash)."""
    input:
        source=[config["data"]["path"]] if config["data"]["path"] else [],
    output:
        train=f"{R}/data/train.parquet",
        val=f"{R}/data/val.parquet",
        test=f"{R}/data/test.parquet",
        rejected=f"{R}/data/rejected.parquet",
    params:
        data=config["data"],
        n_max=config["model"]["n_max"],
    threads: rule_threads("curate")
    resources:
        **rule_resources("curate"),
    log:
        f"{LOGS}/curate.log",
    benchmark:
        f"{BENCH}/curate.tsv"
    conda:
        f"{ENVS}/data.yaml"
    script:
        "../scripts/curate.py"


rule tokenize:
    """Structure -> (G, L, XYZ, A, W) Wyckoff tokens; rows that do not fit are set aside."""
    input:
        data=f"{R}/data/{{split}}.parquet",
    output:
        tokens=f"{R}/data/tokens_{{split}}.parquet",
        rejected=f"{R}/data/tokens_rejected_{{split}}.parquet",
    params:
        tokenize=config["tokenize"],
        n_max=config["model"]["n_max"],
    threads: rule_threads("tokenize")
    resources:
        **rule_resources("tokenize"),
    log:
        f"{LOGS}/tokenize_{{split}}.log",
    benchmark:
        f"{BENCH}/tokenize_{{split}}.tsv"
    conda:
        f"{ENVS}/data.yaml"
    script:
        "../scripts/tokenize.py"

