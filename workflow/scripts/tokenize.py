"""Snakemake script for rule `tokenize`: data/{split}.parquet -> tokens + rejected Parquets."""
from crystalrl.io import set_threads
from crystalrl.tokenizer import run_tokenize


def main(snakemake):
    set_threads(snakemake.threads)
    p = dict(snakemake.params.tokenize)
    run_tokenize(snakemake.input.data, snakemake.output.tokens, snakemake.output.rejected,
                 n_max=int(snakemake.params.n_max), symprec=float(p.get("symprec", 0.01)),
                 tol=float(p.get("tol", 0.01)), processes=snakemake.threads,
                 log=snakemake.log[0] if snakemake.log else None)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
