"""Pretraining / fine-tuning loop: Adam with the public schedule, data parallel, resumable.

- Optimizer (public `main.py`): clip_by_global_norm(clip) -> Adam -> lr/(1+lr_decay*t).
- Dropout only in training; its key for step t is fold_in(key(seed), t), and the
  batch of step t is fixed by `DataOrder`, so a run resumed from a checkpoint at
  step k ends with the same parameters as one that never stopped.
- Data parallel on every local device through `jax.sharding`: a 1-D `Mesh` over
  `jax.devices()`, the batch split on its leading axis, parameters and optimizer
  state replicated; XLA inserts the gradient all-reduce. `batch_size` must be a
  multiple of the device count (it is not padded: the loss is a batch mean).
- Validation loss (all terms) every `val_every` steps; metrics go to Parquet,
  rewritten atomically at each validation, and are kept in the checkpoint too.
"""
from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from crystalrl.io import write_parquet_atomic
from crystalrl.train.checkpoint import (CheckpointStore, abstract_like, build_model, load_model,
                                        params_of, set_params)
from crystalrl.train.data import DataOrder, clean_arrays, fingerprint, take

_LOG = logging.getLogger("crystalrl.train")
# Config fields that may differ between a base model and its fine-tuning run.
_DROPOUT_FIELDS = ("dropout_rate", "attn_dropout")


def make_optimizer(lr: float, lr_decay: float = 0.0, clip_grad: float = 1.0):
    """(optax transform, schedule) exactly as the public code chains them."""
    def schedule(t):
        return lr / (1.0 + lr_decay * t)
    tx = optax.chain(optax.clip_by_global_norm(clip_grad), optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
                     optax.scale_by_schedule(schedule), optax.scale(-1.0))
    return tx, schedule


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh named 'data' over all local devices (or `devices`)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def _rng_tags(model) -> list[str]:
    """Names of the RNG streams stored in the model (dropout), except 'params'."""
    tags = {node.key.tag for _, node in nnx.iter_graph(model) if isinstance(node, nnx.RngStream)}
    return sorted(tags - {"params"})


def _make_steps(graphdef, tags, tx, repl, data_sh):
    """Jitted train and eval steps closed over the model's static structure."""
    from crystalrl.model.likelihood import loss_fn

    def loss_of(params, rest, batch, deterministic):
        model = nnx.merge(graphdef, params, rest, copy=True)
        loss, aux = loss_fn(model, batch, deterministic=deterministic)
        return loss, {k: v for k, v in aux.items() if jnp.ndim(v) == 0}

    def reseeded(params, rest, key):
        """`rest` with every dropout stream restarted from `key` (count 0)."""
        model = nnx.merge(graphdef, params, rest, copy=True)
        nnx.reseed(model, **{t: key for t in tags})
        return nnx.split(model, nnx.Param, ...)[2]

    @partial(jax.jit, in_shardings=(repl, repl, data_sh, None), out_shardings=(repl, repl))
    def train_step(state, rest, batch, step):
        key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), step)
        rest = reseeded(state["params"], rest, key) if tags else rest
        (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(
            state["params"], rest, batch, False)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return dict(params=params, opt_state=opt_state, key=state["key"]), dict(loss=loss, **aux)

    @partial(jax.jit, in_shardings=(repl, repl, data_sh), out_shardings=repl)
    def eval_step(params, rest, batch):
        loss, aux = loss_of(params, rest, batch, True)
        return dict(loss=loss, **aux)

    return train_step, eval_step


def _evaluate(eval_step, params, rest, val_batches) -> dict[str, float]:
    """Row-weighted mean of every loss term over the validation batches."""
    sums, n = {}, 0
    for batch in val_batches:
        b = len(batch["G"])
        out = jax.device_get(eval_step(params, rest, batch))
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
        n += b
    return {k: v / n for k, v in sums.items()}


def _val_batches(arrays, batch_size, n_dev, data_sh, log):
    """Fixed validation batches, each a multiple of the device count (< n_dev rows dropped)."""
    n = len(arrays["G"])
    bounds = list(range(0, n, batch_size)) + [n]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        hi = lo + (hi - lo) // n_dev * n_dev
        if hi > lo:
            out.append(jax.device_put(take(arrays, np.arange(lo, hi)), data_sh))
    used = sum(len(b["G"]) for b in out)
    if used < n:
        log.info("validation uses %d of %d rows (a multiple of %d devices)", used, n, n_dev)
    if not out:
        raise ValueError(f"validation set has {n} rows: fewer than the {n_dev} devices")
    return out


def _check_init_cfg(cfg, init_cfg, init_from):
    a, b = cfg.to_dict(), init_cfg.to_dict()
    diff = {k: (b.get(k), v) for k, v in a.items() if k not in _DROPOUT_FIELDS and b.get(k) != v}
    if diff:
        raise ValueError(f"init_from {init_from}: its config differs from the requested model "
                         f"in {sorted(diff)} (base, requested) = {diff}")


def train(cfg_model, train_arrays: dict, val_arrays: dict, *, lr: float, lr_decay: float = 0.0,
          batch_size: int = 100, steps: int | None = None, epochs: int | None = None,
          clip_grad: float = 1.0, val_every: int = 100, ckpt_every: int | None = None,
          ckpt_dir: str | None = None, keep_ckpts: int = 3, seed: int = 0,
          init_from: str | None = None, metrics_path: str | None = None,
          log: logging.Logger | None = None, log_every: int | None = None,
          stop_after: int | None = None, devices=None, train_ids=None, val_ids=None):
    """Train a CrystalFormer on token arrays; returns the trained model (on the default device).

    `steps` (optimizer steps) or `epochs` (x floor(N/batch_size) steps) sets the length.
    `ckpt_dir`: resumable Orbax checkpoints every `ckpt_every` steps and at the end; a
    run finds the newest one there and continues from it (checkpoints of another
    config or data set are discarded with a warning). `init_from`: a model directory
    (see `save_model`) whose parameters start the run (fine-tuning / SFT); only the
    dropout rates may differ from `cfg_model`. `stop_after`: stop after that many
    steps as if killed (no extra checkpoint; for tests). `devices`: default all.
    """
    log = log or _LOG
    t_start = time.time()
    train_arrays, rej_t = clean_arrays(train_arrays, n_max=cfg_model.n_max, atom_types=cfg_model.atom_types,
                                       wyck_types=cfg_model.wyck_types, name="train", ids=train_ids, log=log)
    val_arrays, rej_v = clean_arrays(val_arrays, n_max=cfg_model.n_max, atom_types=cfg_model.atom_types,
                                     wyck_types=cfg_model.wyck_types, name="val", ids=val_ids, log=log)
    order = DataOrder(len(train_arrays["G"]), batch_size, seed)
    if steps is None:
        if epochs is None:
            raise ValueError("give steps or epochs")
        steps = epochs * order.steps_per_epoch
    ckpt_every = ckpt_every or val_every

    mesh = data_mesh(devices)
    n_dev = mesh.devices.size
    if batch_size % n_dev:
        raise ValueError(f"batch_size {batch_size} is not a multiple of the {n_dev} devices; "
                         f"use e.g. {batch_size // n_dev * n_dev or n_dev}")
    repl, data_sh = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    model = build_model(cfg_model, seed)
    if init_from:
        base, base_cfg = load_model(init_from)
        _check_init_cfg(cfg_model, base_cfg, init_from)
        set_params(model, params_of(base))
        del base
    tags = _rng_tags(model)
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    tx, schedule = make_optimizer(lr, lr_decay, clip_grad)
    params = params_of(model)
    state = dict(params=params, opt_state=tx.init(params),
                 key=jax.random.key_data(jax.random.key(seed)))
    rest_host = rest
    state, rest = jax.device_put(state, repl), jax.device_put(rest, repl)
    train_step, eval_step = _make_steps(graphdef, tags, tx, repl, data_sh)
    val_batches = _val_batches(val_arrays, batch_size, n_dev, data_sh, log)

    run_id = dict(model=cfg_model.to_dict(), lr=lr, lr_decay=lr_decay, batch_size=batch_size,
                  clip_grad=clip_grad, seed=seed, init_from=str(init_from) if init_from else None,
                  train_data=fingerprint(train_arrays), n_train=order.n_rows)
    history: list[dict] = []
    acc = dict(sums={}, n=0)  # train-loss sums since the last validation
    start = 0
    store = CheckpointStore(ckpt_dir, keep=keep_ckpts) if ckpt_dir else None
    if store is not None and store.latest_step() is not None:
        meta = store.read_meta()
        if meta.get("run") != run_id:
            changed = sorted(k for k in run_id if meta.get("run", {}).get(k) != run_id[k])
            log.warning("checkpoints in %s belong to another run (differs in %s); starting afresh",
                        ckpt_dir, changed)
            store.clear()
        else:
            start, state, meta = store.restore_latest(abstract_like(state, repl))
            history, acc = meta["history"], meta["acc"]
            log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt_dir, start,
                     *order.position(start))

    def write_metrics():
        if metrics_path:
            write_parquet_atomic(pd.DataFrame(history), metrics_path)

    def validate(step, pending):
        for out in jax.device_get(pending):
            for k, v in out.items():
                acc["sums"][k] = acc["sums"].get(k, 0.0) + float(v)
            acc["n"] += 1
        pending.clear()
        row = dict(step=step, epoch=step / order.steps_per_epoch,
                   lr=float(schedule(max(step - 1, 0))), time_s=time.time() - t_start)
        row.update({f"train_{k}": v / acc["n"] for k, v in acc["sums"].items()} if acc["n"] else {})
        row.update({f"val_{k}": v for k, v in _evaluate(eval_step, state["params"], rest, val_batches).items()})
        acc["sums"], acc["n"] = {}, 0
        history.append(row)
        write_metrics()
        log.info("step %d: train loss %s  val loss %.4f", step,
                 f"{row['train_loss']:.4f}" if "train_loss" in row else "-", row["val_loss"])

    log.info("training %d steps (%d per epoch, batch %d on %d device(s)), %d train / %d val rows, "
             "%d rejected", steps, order.steps_per_epoch, batch_size, n_dev, order.n_rows,
             len(val_arrays["G"]), len(rej_t) + len(rej_v))
    if start == 0 and not history:
        validate(0, [])
    log_every = log_every or max(1, min(val_every, steps // 20 or 1))
    pending: list = []
    t0, last = time.time(), start
    for step in range(start, steps):
        batch = jax.device_put(take(train_arrays, order.indices(step)), data_sh)
        state, out = train_step(state, rest, batch, np.int32(step))
        pending.append(out)
        done = step + 1
        if done % val_every == 0 or done == steps:
            validate(done, pending)
        if done % log_every == 0:
            rate = (done - last) / max(time.time() - t0, 1e-9)
            log.info("step %d/%d  %.2f steps/s  ETA %s", done, steps, rate,
                     time.strftime("%H:%M:%S", time.gmtime((steps - done) / rate)))
        if store is not None and (done % ckpt_every == 0 or done == steps):
            for o in jax.device_get(pending):  # fold pending losses into the saved sums
                for k, v in o.items():
                    acc["sums"][k] = acc["sums"].get(k, 0.0) + float(v)
                acc["n"] += 1
            pending.clear()
            store.save(done, state, dict(step=done, epoch=order.position(done)[0],
                                         batch_in_epoch=order.position(done)[1], seed=seed,
                                         run=run_id, history=history, acc=acc))
        if stop_after is not None and done >= stop_after:
            log.info("stopping after step %d (stop_after)", done)
            break
    if store is not None:
        store.close()
    write_metrics()
    params = jax.tree.map(jnp.asarray, jax.device_get(state["params"]))
    return nnx.merge(graphdef, params, rest_host)
