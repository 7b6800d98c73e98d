# MLIP relaxation of samples, in chunks that SLURM spreads over GPUs.

if config["hull"]["reference"] == "alexandria":

    rule download_hull:
        """The Alexandria PBE convex hull (the paper's e_hull reference)."""
        output:
            config["hull"]["path"],
        params:
            urls=[config["hull"]["url"]],
            sha256={os.path.basename(config["hull"]["url"]): config["hull"]["sha256"]} if config["hull"]["sha256"] else {},
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
            config["hull"]["path"],
        output:
            HULL_TABLE,
        params:
            elemental_entries=config["hull"]["elemental_entries"],
        resources:
            mem_mb=32000,
        log:
            f"{LOGS}/prepare_hull.log",
        benchmark:
            f"{BENCH}/prepare_hull.tsv"
        conda:
            f"{ENVS}/data.yaml"
        script:
            "../scripts/prepare_hull.py"


rule relax_chunk:
    """FIRE + FrechetCellFilter relaxation of one chunk; failures are marked, not fatal."""
    input:
        hull_input,
        samples=f"{R}/samples/{{model}}/{{set}}.parquet",
    output:
        chunk=temp(f"{R}/relax/{{model}}/{{set}}/chunk_{{chunk}}.parquet"),
    params:
        relax=config["relax"],
        mlip=config["mlip"],
        hull=hull_params(),
    threads: threads_for("mlip")
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=480,
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
        chunks=expand(f"{R}/relax/{{{{model}}}}/{{{{set}}}}/chunk_{{chunk}}.parquet", chunk=range(N_CHUNKS)),
    output:
        relaxed=f"{R}/relax/{{model}}/{{set}}.parquet",
    log:
        f"{LOGS}/merge_relax_{{model}}_{{set}}.log",
    benchmark:
        f"{BENCH}/merge_relax_{{model}}_{{set}}.tsv"
    conda:
        f"{ENVS}/data.yaml"
    script:
        "../scripts/merge_relax.py"
