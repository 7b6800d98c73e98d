"""Snakemake script for rule `curate`: raw data source -> train/val/test/rejected Parquets."""
from crystalrl.data.curate import run_curate
from crystalrl.io import set_threads


def main(snakemake):
    set_threads(snakemake.threads)
    out = {k: getattr(snakemake.output, k) for k in ("train", "val", "test", "rejected")}
    run_curate({**snakemake.params.data, "n_max": snakemake.params.n_max}, out, threads=snakemake.threads, log=snakemake.log[0])


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
