"""Stages `pretrain` and `sft`: token Parquets -> a model directory + metrics (`crystalrl.train.loop`).

params: model (section), train (the `pretrain` or `sft` section), section ("pretrain" or
"sft"), ckpt_dir (resumable checkpoints; never a rule output); inputs: train_tokens,
val_tokens, init_model (list: empty, or the model to fine-tune); outputs: model, metrics.
"""
from __future__ import annotations

import pandas as pd

from crystalrl.distributed import is_primary
from crystalrl.model.config import ModelConfig
from crystalrl.model.store import save_model
from crystalrl.stages import metrics_writer
from crystalrl.train.data import load_token_arrays
from crystalrl.train.loop import TrainConfig, train


def run(inputs, outputs, params, log, threads=1) -> None:
    cfg_model = ModelConfig.from_dict(params["model"])
    cfg = TrainConfig.from_dict(params["train"], section_name=params["section"])
    init = getattr(inputs, "init_model", None) or []
    init_model = init if isinstance(init, str) else (init[0] if init else None)
    tr, tr_ids = load_token_arrays(inputs.train_tokens)
    va, va_ids = load_token_arrays(inputs.val_tokens)
    model = train(cfg_model, cfg, tr, va, ckpt_dir=params["ckpt_dir"], init_from=init_model,
                  on_metrics=metrics_writer(outputs.metrics), log=log, train_ids=tr_ids, val_ids=va_ids)
    if not is_primary():  # one of several processes (crystalrl.distributed): process 0 writes
        return
    last = pd.read_parquet(outputs.metrics).iloc[-1]
    save_model(outputs.model, model, cfg_model, dict(
        train=cfg.to_dict(), init_from=init_model, train_tokens=str(inputs.train_tokens),
        step=int(last["step"]), val_loss=float(last["val_loss"])))
    log.info("wrote %s (step %d, val loss %.4f)", outputs.model, int(last["step"]), float(last["val_loss"]))
