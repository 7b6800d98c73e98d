# The hull reference, and MLIP relaxation of samples in chunks that SLURM spreads over GPUs.

if config["hull"]["reference"] == "alexandria":

    rule download_hull:
        """The Alexandria PBE convex hull (the paper's e_hull reference)."""
        localrule: True  # runs where snakemake runs: downloads need the internet, which compute nodes often lack
        output:
            path=config["hull"]["path"],
        params:
            urls=[config["hull"]["url"]],
            sha256={os.path.basename(config["hull"]["path"]): config["hull"]["sha256"]} if config["hull"]["sha256"] else {},
            lock=config["inputs_lock"],
        log:
            f"{LOGS}/download_hull.log",
        benchmark:
            f"{BENCH}/download_hull.tsv"
        conda:
            f"{ENVS}/data.yaml"
        retries: 2
        script:
            "../scripts/download.py"

    rule prepare_hull:
        """Convert the hull file to a compact table once (seconds to load instead of minutes)."""
        input:
            source=config["hull"]["path"],
        output:
            table=HULL_TABLE,
        params:
            hull=config["hull"],
        resources:
            **rule_resources("prepare_hull"),
        log:
            f"{LOGS}/prepare_hull.log",
        benchmark:
            f"{BENCH}/prepare_hull.tsv"
        conda:
            f"{ENVS}/data.yaml"
        script:
            "../scripts/prepare_hull.py"


if MLIP_WEIGHTS:

    rule fetch_mlip_weights:
        """The MLIP's weights (Orb, MACE, MatterSim), once, so that GPU jobs never download."""
        localrule: True  # runs where snakemake runs: downloads need the internet, which compute nodes often lack
        output:
            weights=MLIP_WEIGHTS,
        params:
            mlip=config["mlip"],
            lock=config["inputs_lock"],
        log:
            f"{LOGS}/fetch_mlip_weights.log",
        benchmark:
            f"{BENCH}/fetch_mlip_weights.tsv"
        conda:
            f"{ENVS}/mlip.yaml"
        retries: 2
        script:
            "../scripts/fetch_mlip.py"


rule relax_chunk:
    """FIRE + FrechetCellFilter relaxation of one chunk; failures are marked, not fatal."""
    input:
        hull=hull_input(),
        mlip_weights=mlip_input(),
        samples=rules.sample.output.samples,
    output:
        chunk=temp(f"{R}/relax/{{model}}/{{set}}/chunk_{{chunk}}.parquet"),
    params:
        relax=config["relax"],
        mlip=mlip_params(),
        hull=hull_params(),
        chunk=lambda w: int(w.chunk),
    threads: rule_threads("mlip")
    resources:
        **rule_resources("relax_chunk"),
    log:
        f"{LOGS}/relax_{{model}}_{{set}}_{{chunk}}.log",
    benchmark:
        f"{BENCH}/relax_{{model}}_{{set}}_{{chunk}}.tsv"
    conda:
        f"{ENVS}/mlip.yaml"
    script:
        "../scripts/relax.py"


rule merge_relax:
    """Gather the relaxed chunks into one table per sample set."""
    input:
        chunks=expand(rules.relax_chunk.output.chunk, chunk=range(N_CHUNKS), allow_missing=True),
    output:
        relaxed=f"{R}/relax/{{model}}/{{set}}.parquet",
    resources:
        **rule_resources("merge_relax"),
    log:
        f"{LOGS}/merge_relax_{{model}}_{{set}}.log",
    benchmark:
        f"{BENCH}/merge_relax_{{model}}_{{set}}.tsv"
    conda:
        f"{ENVS}/data.yaml"
    script:
        "../scripts/merge_relax.py"
