"""Snakemake script for rule `relax_chunk`: one chunk of samples -> MLIP-relaxed Parquet."""
from crystalrl.io import set_threads


def main(snakemake):
    set_threads(snakemake.threads)
    from crystalrl.relax import run_relax_chunk  # after set_threads: torch reads the limits

    run_relax_chunk(snakemake.input.samples, snakemake.output.chunk,
                    chunk=int(snakemake.wildcards.chunk), relax=dict(snakemake.params.relax),
                    mlip=dict(snakemake.params.mlip), hull=dict(snakemake.params.hull or {}),
                    logfile=snakemake.log[0] if snakemake.log else None)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
