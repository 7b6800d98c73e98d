"""Snakemake script for rule `merge_relax`: chunk Parquets -> one relaxed table."""
from crystalrl.relax import merge_chunks


def main(snakemake):
    merge_chunks(list(snakemake.input.chunks), snakemake.output.relaxed)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
