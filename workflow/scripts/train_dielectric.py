"""Rule `train_dielectric`: M3GNet dielectric-tensor model + band-gap model, with metrics."""
from pathlib import Path

from crystalrl.io import get_logger, set_threads


def main(snakemake):
    set_threads(snakemake.threads)
    from crystalrl.dielectric import train_dielectric

    log = get_logger("train_dielectric", snakemake.log[0] if snakemake.log else None)
    metrics_path = Path(snakemake.output.metrics)
    train_dielectric(dict(snakemake.params.dielectric), snakemake.input.data, metrics_path.parent,
                     threads=snakemake.threads, log=log,
                     eps_model_dir=snakemake.output.eps_model, gap_model_dir=snakemake.output.gap_model,
                     metrics_path=metrics_path,
                     ckpt_dir=Path(snakemake.output.eps_model).parent / ".dielectric_ckpt")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
