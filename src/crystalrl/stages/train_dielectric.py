"""Stage `train_dielectric`: the M3GNet dielectric-tensor model and the band-gap model, with metrics.

params: dielectric (section); inputs: data (the MP DFPT set); outputs: eps_model, gap_model,
metrics. Resumable per-epoch checkpoints live beside the models (not a rule output).
"""
from __future__ import annotations

from pathlib import Path

from crystalrl.dielectric.train import train_dielectric


def run(inputs, outputs, params, log, threads=1) -> None:
    metrics = Path(outputs.metrics)
    train_dielectric(dict(params["dielectric"]), inputs.data, metrics.parent, threads=threads, log=log,
                     eps_model_dir=outputs.eps_model, gap_model_dir=outputs.gap_model, metrics_path=metrics,
                     ckpt_dir=Path(outputs.eps_model).parent / ".dielectric_ckpt")
