"""Checkpoints in the exact format the public CrystalFormer code publishes (for tests).

What `crystalformer/src/train.py` + `checkpoint.py` write as `epoch_%06d.pkl`:
`pickle.dump({"params": params, "opt_state": opt_state}, f)` with the default
protocol; `params` is Haiku's `{module: {param: array}}` (jax.Arrays in float32,
or numpy arrays here when `as_jax=False`), `opt_state` the state of `main.py`'s
optimizer `optax.chain(clip_by_global_norm(clip), scale_by_adam(),
scale_by_schedule(lr / (1 + lr_decay * t)), scale(-1))` after some steps.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from crystalrl.model.config import ModelConfig
from crystalrl.model.haiku_import import _variable, haiku_names
from crystalrl.model.transformer import CrystalFormer


def public_optimizer(lr: float = 1e-4, lr_decay: float = 0.0, clip_grad: float = 1.0):
    """The public `main.py` optimizer (its default `--optimizer adam`)."""
    schedule = lambda t: lr / (1 + lr_decay * t)  # noqa: E731 - as the public code writes it
    return optax.chain(optax.clip_by_global_norm(clip_grad), optax.scale_by_adam(),
                       optax.scale_by_schedule(schedule), optax.scale(-1.0))


def random_haiku_params(cfg: ModelConfig, seed: int = 0, scale: float = 0.05) -> dict[str, np.ndarray]:
    """Flat {"module/param": float32 array} of every parameter of `cfg`, seeded normal
    values (LayerNorm scales around 1), so that every path carries non-trivial values."""
    rng = np.random.default_rng(seed)
    model = nnx.eval_shape(lambda: CrystalFormer(cfg, rngs=nnx.Rngs(0)))
    out = {}
    for key, path in haiku_names(cfg).items():
        shape = tuple(_variable(model, path).shape)
        x = rng.normal(0.0, scale, shape)
        out[key] = (1.0 + x if key.endswith("/scale") else x).astype(np.float32)
    return out


def nest(flat: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Haiku's layout: {"linear_3/w": a} -> {"linear_3": {"w": a}} ("~" holds the embeddings)."""
    out: dict[str, dict] = {}
    for key, arr in flat.items():
        mod, name = key.rsplit("/", 1)
        out.setdefault(mod, {})[name] = arr
    return out


def published_checkpoint(flat: dict[str, np.ndarray], *, as_jax: bool, steps: int = 2,
                         seed: int = 1) -> dict:
    """{"params", "opt_state"}: optax's own state types, Adam's count at `steps` and its
    moments filled as after `steps` updates with random gradients (computed in numpy:
    running optax eagerly compiles one program per leaf shape, a minute for the paper config)."""
    arr = jnp.asarray if as_jax else np.asarray
    params = nest({k: arr(v) for k, v in flat.items()})
    opt_state = list(public_optimizer().init(params))
    rng = np.random.default_rng(seed)
    mu, nu = {}, {}
    for key, v in flat.items():
        mod, name = key.rsplit("/", 1)
        g_sk = rng.normal(0, 1e-3, (steps,) + v.shape).astype(np.float32)
        w = 0.1 * 0.9 ** np.arange(steps)[::-1].reshape((steps,) + (1,) * v.ndim)
        mu.setdefault(mod, {})[name] = arr((w * g_sk).sum(0).astype(np.float32))
        nu.setdefault(mod, {})[name] = arr((1e-3 * g_sk**2).sum(0).astype(np.float32))
    count = arr(np.asarray(steps, np.int32))
    adam = [i for i, s in enumerate(opt_state) if isinstance(s, optax.ScaleByAdamState)][0]
    sched = [i for i, s in enumerate(opt_state) if isinstance(s, optax.ScaleByScheduleState)][0]
    opt_state[adam] = opt_state[adam]._replace(count=count, mu=mu, nu=nu)
    opt_state[sched] = opt_state[sched]._replace(count=count)
    return {"params": params, "opt_state": tuple(opt_state)}


def write_published(path: str | Path, flat: dict[str, np.ndarray], *, as_jax: bool = False,
                    steps: int = 2) -> Path:
    """Write `flat` params as the public code's `epoch_*.pkl` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(published_checkpoint(flat, as_jax=as_jax, steps=steps), f)
    return path
