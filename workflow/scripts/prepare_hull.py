"""Rule `prepare_hull`: the Alexandria convex hull json.bz2 -> a compact Parquet table."""
from crystalrl.hull import load_reference
from crystalrl.io import get_logger


def main(snakemake):
    log = get_logger("prepare_hull", snakemake.log[0])
    ref = load_reference(snakemake.input[0], elemental_entries=snakemake.params.elemental_entries)
    ref.to_parquet(snakemake.output[0])
    log.info("%s: %d entries -> %s", snakemake.input[0], len(ref), snakemake.output[0])


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
