"""Rule `ppo`: PPO fine-tuning of a model with a reward from config."""
import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch reward models

from crystalrl.io import get_logger, set_threads  # noqa: E402


def main(snakemake):
    set_threads(snakemake.threads)
    from crystalrl.rl.run import run_ppo_stage

    log = get_logger("ppo", snakemake.log[0])
    run_ppo_stage(
        start_model=snakemake.input.start_model,
        train_tokens=snakemake.input.train_tokens,
        dielectric_dirs=tuple(snakemake.input.dielectric) or None,
        ppo_cfg=dict(snakemake.params.ppo),
        mlip_cfg=dict(snakemake.params.mlip),
        hull_cfg=dict(snakemake.params.hull),
        ckpt_dir=snakemake.params.ckpt_dir,
        out_model=snakemake.output.model,
        out_metrics=snakemake.output.metrics,
        log=log,
    )


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
