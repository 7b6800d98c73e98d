"""GPU memory of the paper's PPO step and pretraining step, from XLA's own buffer plan.

XLA fixes every buffer of a compiled program ahead of time; `compiled.memory_analysis()`
reports them (arguments, outputs, temporaries). This compiles, for the paper's model
config (Table S1), the PPO update (`crystalrl.rl.ppo`: one gradient step of the PPO
objective) and the pretraining step (`crystalrl.train.loop`, dropout on) at a few batch
sizes on this machine's CPU backend, fits bytes = fixed + per_row x rows, and projects
the paper's sizes: 1000 samples per PPO step, 1000 rows per A100 in pretraining. A GPU
compilation fuses differently, so read the projection as an estimate (tens of percent),
not a measurement; `bench/gpu_check.sh` measures on a GPU.

    python bench/memory_budget.py [--rows 32 64 128]
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crystalrl.model.config import ModelConfig
from crystalrl.model.store import build_model
from crystalrl.rl.ppo import _make_update
from crystalrl.train.loop import data_mesh, fresh_train_step, make_optimizer

GIB = 2**30


def _batch(cfg, rows):
    return dict(G=jnp.ones(rows, jnp.int32), L=jnp.ones((rows, 6), jnp.float32),
                XYZ=jnp.full((rows, cfg.n_max, 3), 0.25, jnp.float32),
                A=jnp.ones((rows, cfg.n_max), jnp.int32), W=jnp.ones((rows, cfg.n_max), jnp.int32))


def _bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
               - m.alias_size_in_bytes)


def ppo_update_bytes(cfg, rows: int) -> int:
    model = build_model(cfg)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx, _ = make_optimizer(1e-5)
    p = nnx.to_pure_dict(params)
    update = _make_update(graphdef, rest, tx, 0.1, 0.2, data_mesh(jax.devices()[:1]))
    vec = jnp.zeros(rows, jnp.float32)
    return _bytes(update.lower(dict(params=p, opt_state=tx.init(p)), _batch(cfg, rows), vec, vec, vec).compile())


def train_step_bytes(cfg, rows: int) -> int:
    t = fresh_train_step(cfg, devices=jax.devices()[:1])
    return _bytes(t.train_step.lower(t.state, t.rest, _batch(cfg, rows), np.int32(0)).compile())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[32, 64, 128])
    a = ap.parse_args()
    cfg = ModelConfig.from_dict({})
    print(f"paper model config ({jax.devices()[0].platform} compilation): bytes of one step's buffers "
          "(arguments + outputs + temporaries, XLA's memory_analysis)")
    for name, fn, paper_rows, what in (("PPO update", ppo_update_bytes, 1000, "samples per PPO step"),
                                       ("pretraining step", train_step_bytes, 1000, "rows per A100")):
        b = np.array([fn(cfg, r) for r in a.rows], float)
        per_row, fixed = np.polyfit(a.rows, b, 1)
        proj = fixed + per_row * paper_rows
        print(f"  {name:16s}: " + ", ".join(f"{r} rows {x / GIB:.2f} GiB" for r, x in zip(a.rows, b))
              + f"; fit {fixed / GIB:.2f} GiB + {per_row / 2**20:.1f} MiB/row")
        print(f"  {'':16s}  {paper_rows} {what}: {proj / GIB:.1f} GiB = {proj / (80 * GIB):.0%} of an 80 GB card; "
              f"{proj / (0.45 * 80 * GIB):.2f}x the 45% JAX share")


if __name__ == "__main__":
    main()
