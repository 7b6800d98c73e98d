# Data: download (where the source is remote) -> curate -> tokenize.


if config["data"]["urls"]:

    # Fetch the data source (e.g. HF alex-20 CSVs) with retries and checksums.
    rule download_data:
        output:
            path=directory(config["data"]["path"]),
        log:
            f"{LOGS}/download_data.log",
        benchmark:
            f"{BENCH}/download_data.tsv"
        retries: 2
        localrule: True  # runs where snakemake runs: downloads need the internet, which compute nodes often lack
        conda:
            f"{ENVS}/data.yaml"
        params:
            urls=config["data"]["urls"],
            sha256=config["data"]["sha256"],
            lock=config["inputs_lock"],
        script:
            "../scripts/download.py"


rule curate_shard:
    """Parse and filter (e_hull, atoms, n_max) the rows of one shard of the source (a hash of the id)."""
    input:
        source=[config["data"]["path"]] if config["data"]["path"] else [],
    output:
        kept=f"{R}/data/shards/kept_{{shard}}.parquet",
        rejected=f"{R}/data/shards/rejected_{{shard}}.parquet",
    log:
        f"{LOGS}/curate_shard_{{shard}}.log",
    benchmark:
        f"{BENCH}/curate_shard_{{shard}}.tsv"
    conda:
        f"{ENVS}/data.yaml"
    threads: rule_threads("curate")
    resources:
        **rule_resources("curate"),
    params:
        data=CURATE_PARSE,
        n_max=config["model"]["n_max"],
        shard=lambda w: int(w.shard),
    script:
        "../scripts/curate_shard.py"


rule curate:
    """Structural duplicates removed across all shards, then the split (the source's own, else 80/10/10 by id hash)."""
    input:
        kept=expand(
            rules.curate_shard.output.kept, shard=range(config["data"]["n_shards"])
        ),
        rejected=expand(
            rules.curate_shard.output.rejected, shard=range(config["data"]["n_shards"])
        ),
    output:
        train=f"{R}/data/train.parquet",
        val=f"{R}/data/val.parquet",
        test=f"{R}/data/test.parquet",
        rejected=f"{R}/data/rejected.parquet",
    log:
        f"{LOGS}/curate.log",
    benchmark:
        f"{BENCH}/curate.tsv"
    conda:
        f"{ENVS}/data.yaml"
    threads: rule_threads("curate")
    resources:
        **rule_resources("curate_merge"),
    params:
        data=config["data"],
    script:
        "../scripts/curate.py"


rule tokenize:
    """Structure -> (G, L, XYZ, A, W) Wyckoff tokens; rows that do not fit are set aside."""
    input:
        data=f"{R}/data/{{split}}.parquet",
    output:
        tokens=f"{R}/data/tokens_{{split}}.parquet",
        rejected=f"{R}/data/tokens_rejected_{{split}}.parquet",
    log:
        f"{LOGS}/tokenize_{{split}}.log",
    benchmark:
        f"{BENCH}/tokenize_{{split}}.tsv"
    conda:
        f"{ENVS}/data.yaml"
    threads: rule_threads("tokenize")
    resources:
        **rule_resources("tokenize"),
    params:
        tokenize=config["tokenize"],
        n_max=config["model"]["n_max"],
    script:
        "../scripts/tokenize.py"
