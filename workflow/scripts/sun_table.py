"""Snakemake script for rule `sun_table`: a row per (model, space group) plus total rows, as CSV."""

from crystalrl.evaluate.sun import sun_table_from_files
from crystalrl.io import get_logger, set_threads, write_text_atomic


def main(snakemake) -> None:
    set_threads(snakemake.threads)
    log = get_logger("sun_table", snakemake.log[0] if snakemake.log else None)
    table = sun_table_from_files(list(snakemake.input.evals), getattr(snakemake.input, "train_tokens", None))
    write_text_atomic(table.to_csv(index=False), snakemake.output.table)
    log.info("S.U.N. table: %d rows -> %s", len(table), snakemake.output.table)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
