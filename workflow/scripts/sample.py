"""Snakemake script for rule `sample`: model directory -> samples/{model}/{set}.parquet."""
from crystalrl.io import set_threads


def main(snakemake):
    set_threads(snakemake.threads)
    from crystalrl.model.sampler import run_sample  # after set_threads: jax reads the env
    run_sample(snakemake.input.model, snakemake.input.train_tokens, snakemake.output.samples,
               dict(snakemake.params.sample), snakemake.params.model_name,
               log=snakemake.log[0] if snakemake.log else None)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
