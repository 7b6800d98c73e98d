"""Pretraining / fine-tuning loop: Adam with the public schedule, data parallel, resumable.

- Optimizer (public `main.py`): clip_by_global_norm(clip) -> Adam -> lr/(1+lr_decay*t).
- Dropout only in training; its key for step t is fold_in(key(seed), t), and the
  batch of step t is fixed by `DataOrder`, so a run resumed from a checkpoint at
  step k ends with the same parameters as one that never stopped.
- Data parallel on every local device through `jax.sharding`: a 1-D `Mesh` over
  `jax.devices()`, the batch split on its leading axis, parameters and optimizer
  state replicated; XLA inserts the gradient all-reduce. `batch_size` must be a
  multiple of the device count (it is not padded: the loss is a batch mean).
- Validation loss (all terms) every `val_every` steps; the metrics table goes to the
  stage's `on_metrics` at each validation (it writes the Parquet), and into the checkpoint.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from crystalrl.config import SectionConfig
from crystalrl.digest import digest_arrays
from crystalrl.distributed import fetch, global_batch, is_primary, local_rows, replicated
from crystalrl.model.published import load_published
from crystalrl.model.store import abstract_like, build_model, load_model, params_of, set_params
from crystalrl.timelimit import StopRequest, TimeLimit, stop_record, stops_text
from crystalrl.train.checkpoint import CheckpointStore
from crystalrl.train.data import DataOrder, clean_arrays, fingerprint, take

_LOG = logging.getLogger("crystalrl.train")
# Config fields that may differ between a base model and its fine-tuning run.
_DROPOUT_FIELDS = ("dropout_rate", "attn_dropout")


@dataclass(frozen=True)
class TrainConfig(SectionConfig):
    """Optimiser and schedule of a training run: config section `pretrain` (or `sft`, with
    `TrainConfig.from_dict(d, section="sft")`); defaults live in the schema."""

    SECTION = "pretrain"
    OTHER_KEYS = ("init_from", "base_from", "n_samples", "e_hull_max")  # what to train from / on, not how

    lr: float
    lr_decay: float
    batch_size: int
    micro_batch: int | None
    steps: int
    clip_grad: float
    val_every: int
    ckpt_every: int
    seed: int


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


def _rng_tags(model) -> tuple[str, ...]:
    """Names of the RNG streams stored in the model (dropout), except 'params'."""
    tags = {node.key.tag for _, node in nnx.iter_graph(model) if isinstance(node, nnx.RngStream)}
    return tuple(sorted(tags - {"params"}))


@functools.lru_cache(maxsize=8)
def _make_steps(graphdef, tags: tuple[str, ...], lr: float, lr_decay: float, clip_grad: float,
                mesh: Mesh, n_micro: int = 1):
    """Jitted train and eval steps for one model structure and optimizer (cached, so
    repeated `train` calls in one process, e.g. a resume, compile only once).

    With `n_micro` > 1 the train step accumulates gradients over that many micro-batches
    (`lax.scan`, so only one micro-batch's activations live at a time) and takes one
    optimizer step with their mean: with equal micro-batches that is the full batch's
    mean-loss gradient. Micro-batch j holds rows j, j + n, j + 2n, ... of the global
    batch, so each is spread over every device exactly as the full batch is.
    """
    from crystalrl.model.likelihood import logp_terms, loss_fn
    tx, _ = make_optimizer(lr, lr_decay, clip_grad)
    repl, data_sh = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    micro_sh = NamedSharding(mesh, P(None, "data"))

    def loss_of(params, rest, batch):
        model = nnx.merge(graphdef, params, rest, copy=True)
        loss, aux = loss_fn(model, batch, deterministic=False)
        return loss, {k: v for k, v in aux.items() if jnp.ndim(v) == 0}

    def reseeded(params, rest, key):
        """`rest` with every dropout stream restarted from `key` (count 0)."""
        model = nnx.merge(graphdef, params, rest, copy=True)
        nnx.reseed(model, **{t: key for t in tags})
        return nnx.split(model, nnx.Param, ...)[2]

    def grads_of(params, rest, batch, key):
        rest = reseeded(params, rest, key) if tags else rest
        (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(params, rest, batch)
        return grads, dict(loss=loss, **aux)

    def accumulated(params, rest, batch, key):
        """Mean gradient and metrics over `n_micro` micro-batches, dropout key fold_in(key, j)."""
        micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // n_micro, n_micro, *x.shape[1:]),
                                                    0, 1), batch)
        micro = jax.lax.with_sharding_constraint(micro, micro_sh)

        def body(acc, j_batch):
            j, mb = j_batch
            g, aux = grads_of(params, rest, mb, jax.random.fold_in(key, j))
            return jax.tree.map(jnp.add, acc, (g, aux)), None

        zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: grads_of(params, rest,
                                                                             jax.tree.map(lambda x: x[0], micro), key)))
        total, _ = jax.lax.scan(body, zeros, (jnp.arange(n_micro), micro))
        return jax.tree.map(lambda x: x / n_micro, total)

    # the state's buffers are donated: params and Adam moments are updated in place, not copied
    @partial(jax.jit, in_shardings=(repl, repl, data_sh, None), out_shardings=(repl, repl), donate_argnums=0)
    def train_step(state, rest, batch, step):
        key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), step)
        if n_micro == 1:
            grads, aux = grads_of(state["params"], rest, batch, key)
        else:
            grads, aux = accumulated(state["params"], rest, batch, key)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return dict(params=params, opt_state=opt_state, key=state["key"]), aux

    @partial(jax.jit, in_shardings=(repl, repl, data_sh, data_sh), out_shardings=repl)
    def eval_sums(params, rest, batch, weight_b):
        """Weighted sums of the per-row NLL terms (pad rows have weight 0)."""
        model = nnx.merge(graphdef, params, rest, copy=True)
        t = logp_terms(model, batch["G"], batch["L"], batch["XYZ"], batch["A"], batch["W"],
                       deterministic=True)
        out = {"loss_" + k.removeprefix("logp_"): -jnp.sum(v * weight_b) for k, v in t.items()}
        out["loss"] = sum(out.values())
        return out

    return train_step, eval_sums


def duration(seconds: float) -> str:
    """`1d 02:03:04` (`time.strftime` of a gmtime wrapped at 24 h: a 5-day ETA read as hours)."""
    s = int(round(max(seconds, 0)))
    days, rest = divmod(s, 86400)
    return (f"{days}d " if days else "") + f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def micro_batches(batch_size: int, micro_batch: int | None, n_dev: int) -> tuple[int, int]:
    """(number of micro-batches, rows in each) of a global batch; ValueError naming the keys
    when `micro_batch` does not divide `batch_size` or is not a multiple of the device count."""
    if micro_batch is None or micro_batch >= batch_size:
        return 1, batch_size
    if batch_size % micro_batch or micro_batch % n_dev:
        raise ValueError(f"micro_batch {micro_batch} must divide batch_size {batch_size} and be a multiple "
                         f"of the {n_dev} device(s); e.g. {_divisor_near(batch_size, micro_batch, n_dev)}")
    return batch_size // micro_batch, micro_batch


def _divisor_near(batch_size: int, want: int, n_dev: int) -> int:
    ok = [m for m in range(n_dev, batch_size + 1, n_dev) if batch_size % m == 0]
    return min(ok, key=lambda m: (abs(m - want), m)) if ok else batch_size


def fresh_train_step(cfg_model, lr: float = 1e-4, seed: int = 0, devices=None, n_micro: int = 1) -> SimpleNamespace:
    """One training step of `train` without the loop around it (benchmarks): a fresh model's
    `graphdef`, `params`, replicated `state` and `rest`, the loop's own jitted `train_step`
    (Adam, clipping 1.0, no decay, `n_micro` accumulated micro-batches) and the batch
    sharding `data_sh` of the device mesh. The step donates `state`; `params` stay valid."""
    model = build_model(cfg_model, seed)
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    mesh = data_mesh(devices)
    repl = NamedSharding(mesh, P())
    tx, _ = make_optimizer(lr)
    params = params_of(model)
    state = jax.device_put(jax.tree.map(jnp.copy, dict(params=params, opt_state=tx.init(params),
                                                       key=jax.random.key_data(jax.random.key(seed)))), repl)
    train_step, _ = _make_steps(graphdef, _rng_tags(model), float(lr), 0.0, 1.0, mesh, n_micro)
    return SimpleNamespace(graphdef=graphdef, params=params, state=state, rest=jax.device_put(rest, repl),
                           train_step=train_step, data_sh=NamedSharding(mesh, P("data")))


def _val_batches(arrays, batch_size, data_sh):
    """Fixed validation batches of one shape; the last is padded with weight-0 rows.
    With several processes each feeds its share of every batch (`distributed.global_batch`)."""
    n = len(arrays["G"])
    out = []
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, lo + batch_size)[local_rows(batch_size)]
        rows = dict(take(arrays, np.minimum(idx, n - 1)), weight=(idx < n).astype(np.float32))
        batch = global_batch(rows, data_sh)
        out.append((batch, batch.pop("weight")))
    return out, n


def _evaluate(eval_sums, params, rest, val_batches) -> dict[str, float]:
    """Mean of every loss term over all validation rows."""
    batches, n = val_batches
    sums = [eval_sums(params, rest, b, w) for b, w in batches]
    return {k: float(sum(s[k] for s in fetch(sums))) / n for k in sums[0]}


def _check_init_cfg(cfg, init_cfg, init_from):
    a, b = cfg.to_dict(), init_cfg.to_dict()
    diff = {k: (b.get(k), v) for k, v in a.items() if k not in _DROPOUT_FIELDS and b.get(k) != v}
    if diff:
        raise ValueError(f"init_from {init_from}: its config differs from the requested model "
                         f"in {sorted(diff)} (base, requested) = {diff}")


class _Metrics:
    """Train-loss running sums between validations, and the metrics table, handed to the
    stage's `on_metrics` after each validation (the stage writes the artifact).

    Both live in the checkpoint (`state_dict`), so a resumed run hands on the same table.
    """

    def __init__(self, on_metrics, history=None, acc=None):
        self.on_metrics, self.history = on_metrics, list(history or [])
        self.acc = acc or dict(sums={}, n=0)
        self.pending: list = []  # device arrays of steps not yet added (keeps dispatch async)

    def add(self, out) -> None:
        self.pending.append(out)

    def flush(self) -> None:
        for out in fetch(self.pending):
            for k, v in out.items():
                self.acc["sums"][k] = self.acc["sums"].get(k, 0.0) + float(v)
            self.acc["n"] += 1
        self.pending.clear()

    def row(self, base: dict, val: dict) -> dict:
        """Close the interval: one table row with mean train terms and the val terms."""
        self.flush()
        n = self.acc["n"]
        row = dict(base, **{f"train_{k}": v / n for k, v in self.acc["sums"].items()} if n else {})
        row.update({f"val_{k}": v for k, v in val.items()})
        self.acc = dict(sums={}, n=0)
        self.history.append(row)
        self.write()
        return row

    def write(self) -> None:
        if self.on_metrics is not None and is_primary():
            self.on_metrics(pd.DataFrame(self.history))

    def state_dict(self) -> dict:
        self.flush()
        return dict(history=self.history, acc=self.acc)

    def check_finite(self, step: int) -> None:
        """FloatingPointError when a loss since the last validation, or the last row, is NaN or inf."""
        self.flush()
        last = self.history[-1] if self.history else {}
        bad = {k: v for k, v in {**self.acc["sums"], **last}.items()
               if k.startswith(("loss", "train_loss", "val_loss")) and not np.isfinite(v)}
        if bad:
            raise FloatingPointError(
                f"training diverged by step {step}: {sorted(bad)} not finite. The newest checkpoint "
                "before this step is kept; lower the learning rate (or raise clip_grad) and rerun.")


def _initial_state(cfg_model, seed, init_from, tx):
    """(graphdef, rest, rng tags, state dict) of a fresh or `init_from` model."""
    model = build_model(cfg_model, seed)
    if init_from:
        # a model directory, or a public CrystalFormer file (no config of its own: read with cfg_model)
        base, base_cfg = load_published(init_from, cfg_model) if Path(init_from).is_file() else load_model(init_from)
        _check_init_cfg(cfg_model, base_cfg, init_from)
        set_params(model, params_of(base))
    tags = _rng_tags(model)
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    params = params_of(model)
    state = dict(params=params, opt_state=tx.init(params),
                 key=jax.random.key_data(jax.random.key(seed)))
    return graphdef, rest, tags, state


def train(cfg_model, cfg: TrainConfig, train_arrays: dict, val_arrays: dict, *,
          ckpt_dir: str | None = None, keep_ckpts: int = 3, init_from: str | None = None,
          on_metrics: Callable[[pd.DataFrame], None] | None = None, log: logging.Logger | None = None,
          log_every: int | None = None, stop_after: int | None = None, devices=None,
          train_ids=None, val_ids=None):
    """Train a CrystalFormer `cfg_model` on token arrays with the settings `cfg`; returns the
    trained model (on the default device).

    `ckpt_dir`: resumable Orbax checkpoints every `cfg.ckpt_every` steps and at the end; a
    run finds the newest intact one there and continues from it. Checkpoints of another
    run (config, optimizer setting, starting parameters or data) are set aside, never
    resumed (`CheckpointStore.resume`). A loss that turns NaN or inf stops the run
    (FloatingPointError) before it is checkpointed. `init_from`:
    a model directory (see `crystalrl.model.store`) or a public CrystalFormer Haiku
    checkpoint (`.pkl`/`.npz`, read with `cfg_model`) whose parameters start the run
    (fine-tuning, SFT); only the dropout rates may differ from `cfg_model`. `stop_after`:
    stop after that many steps as if killed (no extra checkpoint; for tests). `devices`:
    the devices of the data-parallel mesh (default: all local devices).
    """
    lr, lr_decay, clip_grad, seed = cfg.lr, cfg.lr_decay, cfg.clip_grad, cfg.seed
    batch_size, steps, val_every, ckpt_every = cfg.batch_size, cfg.steps, cfg.val_every, cfg.ckpt_every
    log = log or _LOG
    t_start = time.time()
    dims = dict(n_max=cfg_model.n_max, atom_types=cfg_model.atom_types, wyck_types=cfg_model.wyck_types)
    train_arrays, rej_t = clean_arrays(train_arrays, **dims, name="train", ids=train_ids, log=log)
    val_arrays, rej_v = clean_arrays(val_arrays, **dims, name="val", ids=val_ids, log=log)
    n_train = len(train_arrays["G"])
    for name, arr, rej in (("train", train_arrays, rej_t), ("val", val_arrays, rej_v)):
        if len(arr["G"]) == 0:
            raise ValueError(f"the {name} tokens hold no usable rows ({len(rej)} dropped here; the curate and "
                             "tokenize logs say why the others went): nothing to train or validate on")
    if 0 < n_train < batch_size:
        # SFT on few stable samples: full-batch steps rather than no fine-tuning at all
        n_dev = len(jax.devices()) if devices is None else len(devices)
        smaller = max(n_train // n_dev * n_dev, n_dev)
        log.warning("batch_size %d is larger than the training set (%d rows): using %d", batch_size, n_train, smaller)
        batch_size = smaller
    order = DataOrder(n_train, batch_size, seed)

    mesh = data_mesh(devices)
    n_dev = mesh.devices.size
    if batch_size % n_dev:
        raise ValueError(f"batch_size {batch_size} is not a multiple of the {n_dev} devices "
                         f"(the batch is split evenly, not padded); use e.g. "
                         f"{max(batch_size // n_dev, 1) * n_dev}")
    n_micro, micro = micro_batches(batch_size, cfg.micro_batch, n_dev)
    repl, data_sh = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    tx, schedule = make_optimizer(lr, lr_decay, clip_grad)
    graphdef, rest_host, tags, state = _initial_state(cfg_model, seed, init_from, tx)
    init_digest = digest_arrays(state["params"])
    state, rest = replicated(state, repl), replicated(rest_host, repl)
    train_step, eval_sums = _make_steps(graphdef, tags, float(lr), float(lr_decay), float(clip_grad), mesh,
                                        n_micro)
    val_batches = _val_batches(val_arrays, micro, data_sh)

    # A checkpoint is resumed only by the run that wrote it: same settings, same starting
    # parameters (by value: a retrained or replaced init model changes them), same data.
    # Not the device count or micro-batching: they split the same update differently, so a
    # run may resume on other hardware.
    run_id = dict(model=cfg_model.to_dict(), lr=lr, lr_decay=lr_decay, batch_size=batch_size,
                  clip_grad=clip_grad, seed=seed, init_params=init_digest,
                  train_data=fingerprint(train_arrays), val_data=fingerprint(val_arrays), n_train=order.n_rows)
    metrics, start, stops = _Metrics(on_metrics), 0, []
    store = CheckpointStore(ckpt_dir, keep=keep_ckpts, log=log) if ckpt_dir else None
    if store is not None:
        resumed = store.resume(abstract_like(state, repl), run_id, max_step=steps)
        if resumed is not None:
            start, state, meta = resumed
            metrics, stops = _Metrics(on_metrics, meta["history"], meta["acc"]), meta.get("stops", [])
            log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt_dir, start,
                     *order.position(start))
            if stops:
                log.info("this run stopped for Slurm time limits %d time(s) so far: %s", len(stops), stops_text(stops))

    def validate(step):
        row = metrics.row(dict(step=step, epoch=step / order.steps_per_epoch,
                               lr=float(schedule(max(step - 1, 0))), time_s=time.time() - t_start),
                          _evaluate(eval_sums, state["params"], rest, val_batches))
        log.info("step %d: train loss %s  val loss %.4f (w %.3f a %.3f xyz %.3f l %.3f)", step,
                 f"{row['train_loss']:.4f}" if "train_loss" in row else "-", row["val_loss"],
                 *(row.get(f"val_loss_{k}", np.nan) for k in ("w", "a", "xyz", "l")))

    log.info("training steps %d..%d (%d per epoch, batch %d on %d device(s)%s); %d train / %d val "
             "rows, %d rejected", start, steps, order.steps_per_epoch, batch_size, n_dev,
             f" as {n_micro} accumulated micro-batches of {micro}" if n_micro > 1 else "",
             order.n_rows, len(val_arrays["G"]), len(rej_t) + len(rej_v))
    if start == 0:
        validate(0)
    log_every = log_every or max(1, min(val_every, steps // 20 or 1))
    t0, first = None, None
    def checkpoint(done, stopping=False):
        epoch, pos = order.position(done)
        if stopping:
            stops.append(stop_record(done))
        meta = dict(step=done, epoch=epoch, batch_in_epoch=pos, seed=seed, run=run_id, stops=stops,
                    **metrics.state_dict())
        metrics.check_finite(done)  # never checkpoint a diverged state: the last good one stays
        store.save(done, state, meta)

    with StopRequest(log) as stop:
        for step in range(start, steps):
            batch = global_batch(take(train_arrays, order.indices(step)[local_rows(batch_size)]), data_sh)
            state, out = train_step(state, rest, batch, np.int32(step))
            metrics.add(out)
            done = step + 1
            if done % val_every == 0 or done == steps:
                validate(done)
                metrics.check_finite(done)
            if t0 is None:  # time from the end of the first (compiling) step
                jax.block_until_ready(out)
                t0, first = time.time(), done
            elif done % log_every == 0:
                jax.block_until_ready(out)
                rate = (done - first) / max(time.time() - t0, 1e-9)
                log.info("step %d/%d  %.2f steps/s  ETA %s", done, steps, rate, duration((steps - done) / rate))
            saved = store is not None and (done % ckpt_every == 0 or done == steps)
            if saved:
                checkpoint(done)
            if done < steps and stop.requested():  # a Slurm time limit is near (crystalrl.timelimit)
                if store is not None:
                    checkpoint(done, stopping=True)
                if store is not None:
                    store.close()
                metrics.write()
                raise TimeLimit(done, str(ckpt_dir))
            if stop_after is not None and done >= stop_after:
                log.info("stopping after step %d (stop_after)", done)
                break
    if store is not None:
        store.close()
    metrics.write()
    params = jax.tree.map(jnp.asarray, fetch(state["params"]))
    return nnx.merge(graphdef, params, rest_host)
