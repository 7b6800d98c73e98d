# The hull reference, and MLIP relaxation of samples in chunks that SLURM spreads over GPUs.

if config["hull"]["reference"] == "alexandria":

    # The Alexandria PBE convex hull (the paper's e_hull reference).
    rule download_hull:
        output:
            path=config["hull"]["path"],
        log:
            f"{LOGS}/download_hull.log",
        benchmark:
            f"{BENCH}/download_hull.tsv"
        retries: 2
        localrule: True  # runs where snakemake runs: downloads need the internet, which compute nodes often lack
        conda:
            f"{ENVS}/data.yaml"
        params:
            urls=[config["hull"]["url"]],
            sha256=(
                {os.path.basename(config["hull"]["path"]): config["hull"]["sha256"]}
                if config["hull"]["sha256"]
                else {}
            ),
            lock=config["inputs_lock"],
        script:
            "../scripts/download.py"

    rule prepare_hull:
        """Convert the hull file to a compact table once (seconds to load instead of minutes)."""
        input:
            source=config["hull"]["path"],
        output:
            table=HULL_TABLE,
        log:
            f"{LOGS}/prepare_hull.log",
        benchmark:
            f"{BENCH}/prepare_hull.tsv"
        conda:
            f"{ENVS}/data.yaml"
        resources:
            **rule_resources("prepare_hull"),
        params:
            hull=config["hull"],
        script:
            "../scripts/prepare_hull.py"


if MLIP_WEIGHTS:

    # The MLIP's weights (Orb, MACE, MatterSim), once, so that GPU jobs never download.
    rule fetch_mlip_weights:
        output:
            weights=MLIP_WEIGHTS,
        log:
            f"{LOGS}/fetch_mlip_weights.log",
        benchmark:
            f"{BENCH}/fetch_mlip_weights.tsv"
        retries: 2
        localrule: True  # runs where snakemake runs: downloads need the internet, which compute nodes often lack
        conda:
            f"{ENVS}/mlip.yaml"
        params:
            mlip=config["mlip"],
            lock=config["inputs_lock"],
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
    log:
        f"{LOGS}/relax_{{model}}_{{set}}_{{chunk}}.log",
    benchmark:
        f"{BENCH}/relax_{{model}}_{{set}}_{{chunk}}.tsv"
    conda:
        f"{ENVS}/mlip.yaml"
    threads: rule_threads("mlip")
    resources:
        **rule_resources("relax_chunk"),
    params:
        relax=config["relax"],
        mlip=mlip_params(),
        hull=hull_params(),
        chunk=lambda w: int(w.chunk),
    script:
        "../scripts/relax.py"


rule merge_relax:
    """Gather the relaxed chunks into one table per sample set."""
    input:
        chunks=expand(
            rules.relax_chunk.output.chunk, chunk=range(N_CHUNKS), allow_missing=True
        ),
    output:
        relaxed=f"{R}/relax/{{model}}/{{set}}.parquet",
    log:
        f"{LOGS}/merge_relax_{{model}}_{{set}}.log",
    benchmark:
        f"{BENCH}/merge_relax_{{model}}_{{set}}.tsv"
    conda:
        f"{ENVS}/data.yaml"
    resources:
        **rule_resources("merge_relax"),
    script:
        "../scripts/merge_relax.py"
