"""A plain torch training loop for matgl graph regressors (M3GNet, MEGNet) on CPU.

Why not matgl's Lightning module: its `ModelLightningModule` normalises with one
scalar mean/std, while the six tensor components need a per-component offset
(diagonal ~10, off-diagonal ~0). The loop here is the same recipe (Adam, L1 loss,
cosine decay to 1% of lr, matgl's defaults), keeps the best-validation weights,
checkpoints every epoch for resume, and at the end folds the target scaling into
the last Linear layer, so the saved model is a pure matgl model whose raw output is
in physical units and `matgl.load_model(dir)` is all a user needs.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from crystalrl.dielectric.graphs import Graph, forward_batch

log_ = logging.getLogger(__name__)


@dataclass
class FitResult:
    best_epoch: int
    best_val: float
    epochs_run: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0


def output_linear(model) -> torch.nn.Linear:
    """The last Linear layer of an intensive M3GNet (`final_layer`) or MEGNet (`output_proj`)."""
    for name in ("final_layer", "output_proj"):
        head = getattr(model, name, None)
        if head is not None and hasattr(head, "last_linear"):
            return head.last_linear
    raise TypeError(f"{type(model).__name__}: no MLP output head to fold the target scaling into")


@torch.no_grad()
def fold_scaling(model, mean_k: np.ndarray, scale: float) -> None:
    """Make raw outputs physical: y = scale * (W h + b) + mean  ->  W' = scale W, b' = scale b + mean."""
    lin = output_linear(model)
    lin.weight.mul_(scale)
    mean_t = torch.as_tensor(np.asarray(mean_k, dtype=np.float32))
    if lin.bias is None:
        raise TypeError("output layer has no bias to carry the target mean")
    lin.bias.mul_(scale).add_(mean_t)


@torch.no_grad()
def predict_graphs(model, graphs: list[Graph], batch_size: int = 64, device="cpu") -> np.ndarray:
    """Raw model outputs (n, ntargets) for already-converted graphs."""
    model.eval()
    outs = [forward_batch(model, graphs[i:i + batch_size], device).cpu().numpy()
            for i in range(0, len(graphs), batch_size)]
    return np.concatenate(outs, axis=0).astype(float)


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, device, log: logging.Logger) -> dict | None:
    """The checkpoint at `path`, or None when it cannot be read (moved to `<path>.corrupt`, logged)."""
    try:
        return torch.load(path, weights_only=False, map_location=device)  # our own file, written by fit
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file: start afresh, keep it for inspection
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        log.warning("checkpoint %s is unreadable (%s: %s); moved to %s, starting afresh", path,
                    type(exc).__name__, str(exc)[:200], aside)
        return None


def fit(model, train: tuple[list[Graph], np.ndarray], val: tuple[list[Graph], np.ndarray], *,
        epochs: int, batch_size: int, lr: float, seed: int,
        val_metric: Callable[[np.ndarray, np.ndarray], float],
        mean_k: np.ndarray, scale: float, lr_min_ratio: float = 0.01,
        max_seconds: float | None = None, ckpt_path: str | Path | None = None,
        ckpt_key: str = "", log: logging.Logger | None = None, device="cpu") -> FitResult:
    """Train `model` in place on normalised targets with L1 loss; leave it at the best-val weights.

    `train`/`val` are (graphs, targets (n, k) in physical units). `val_metric(pred, y)`
    (physical units, lower is better) picks the best epoch. `ckpt_path` (optional)
    holds a resumable checkpoint, reused only when its `ckpt_key` (a hash of the
    config and the data's content) matches; an unreadable one is set aside. After training the scaling is folded into the output layer and
    the model is back on the CPU.
    """
    log = log or log_
    graphs_tr, y_tr = train
    graphs_va, y_va = val
    mean_t = torch.as_tensor(np.asarray(mean_k, dtype=np.float32))
    yn_tr = (torch.as_tensor(y_tr, dtype=torch.float32).reshape(len(graphs_tr), -1) - mean_t) / scale
    model.to(device)
    yn_tr = yn_tr.to(device)

    optimizer = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-8)
    steps_per_epoch = max(1, int(np.ceil(len(graphs_tr) / batch_size)))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, epochs * steps_per_epoch), eta_min=lr * lr_min_ratio)

    start_epoch, best_val, best_epoch, history = 0, float("inf"), -1, []
    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    ckpt_path = Path(ckpt_path) if ckpt_path else None
    ckpt = _load_checkpoint(ckpt_path, device, log) if ckpt_path is not None and ckpt_path.exists() else None
    if ckpt is not None:
        if ckpt.get("key") == ckpt_key:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            start_epoch, best_val, best_epoch = ckpt["epoch"] + 1, ckpt["best_val"], ckpt["best_epoch"]
            best_state, history = ckpt["best_state"], ckpt["history"]
            log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)
        else:
            log.warning("not resuming %s: written for another run (config or data); starting afresh", ckpt_path)
    resumed_from = start_epoch

    t0 = time.perf_counter()
    epoch = start_epoch - 1
    for epoch in range(start_epoch, epochs):
        model.train()
        order = np.random.default_rng(seed + 1000 * epoch).permutation(len(graphs_tr))
        losses = []
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            pred = forward_batch(model, [graphs_tr[j] for j in idx], device)
            loss = torch.nn.functional.l1_loss(pred, yn_tr[torch.as_tensor(idx, device=device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        pred_va = predict_graphs(model, graphs_va, batch_size, device) * scale + mean_t.numpy()
        val = float(val_metric(pred_va, y_va))
        history.append({"epoch": epoch, "train_l1_normalised": float(np.mean(losses)), "val": val,
                        "seconds": round(time.perf_counter() - t0, 1)})
        if val < best_val:
            best_val, best_epoch = val, epoch
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        log.info("epoch %d/%d train L1 (normalised) %.4f  val %.4f  best %.4f @%d",
                 epoch + 1, epochs, np.mean(losses), val, best_val, best_epoch + 1)
        if ckpt_path is not None:
            _save_atomic({"key": ckpt_key, "epoch": epoch, "model": model.state_dict(),
                          "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "best_val": best_val, "best_epoch": best_epoch, "best_state": best_state,
                          "history": history}, ckpt_path)
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            log.info("stopping after epoch %d: time budget of %.0f s used", epoch + 1, max_seconds)
            break

    model.load_state_dict(best_state)
    model.cpu()
    fold_scaling(model, mean_k, scale)
    model.eval()
    return FitResult(best_epoch=best_epoch, best_val=best_val, epochs_run=epoch + 1,
                     seconds=time.perf_counter() - t0, history=history, resumed_from_epoch=resumed_from)
