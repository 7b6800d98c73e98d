"""Snakemake script of the pretrain and SFT rules: token Parquets -> model directory + metrics.

input: train_tokens, val_tokens, optional init_model (SFT: the base model directory)
output: model (directory, via save_model), metrics (Parquet)
params: model (dict -> ModelConfig), train (dict: lr, lr_decay, batch_size, steps or
epochs, val_every, ckpt_every, seed, clip_grad, keep_ckpts), ckpt_dir (str, not an output)
"""


def main(snakemake) -> None:
    from crystalrl.io import get_logger, set_threads
    set_threads(snakemake.threads)
    from crystalrl.train.loop import run_pretrain
    init = getattr(snakemake.input, "init_model", None)  # a path, or a (possibly empty) list
    init = (init[0] if init else None) if isinstance(init, list) else init
    run_pretrain(
        train_tokens=snakemake.input.train_tokens, val_tokens=snakemake.input.val_tokens,
        init_model=init, model_dir=snakemake.output.model,
        metrics_path=snakemake.output.metrics, model_params=dict(snakemake.params.model),
        train_params=dict(snakemake.params.train), ckpt_dir=snakemake.params.ckpt_dir,
        log=get_logger("pretrain", snakemake.log[0] if snakemake.log else None))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
