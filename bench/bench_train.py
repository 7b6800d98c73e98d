"""Training throughput: our full step vs a bare jitted value_and_grad of the same loss.

The full step adds what `train` does each step: gradient clipping + Adam + schedule,
dropout reseeding, sharded placement and the host-side batch gather. The ratio says
what that machinery costs; steps/s is what a run on this machine can expect.

    python bench/bench_train.py [small|paper ...] [--batch 100] [--steps 5]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from crystalrl.model.config import ModelConfig
from crystalrl.model.likelihood import loss_fn
from crystalrl.train.data import DataOrder, clean_arrays, take
from crystalrl.train.loop import fresh_train_step

CONFIGS = {"small": dict(num_layers=2, num_heads=4, key_size=16, model_size=32), "paper": {}}
SHARED = Path(os.environ.get("CRYSTALRL_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _time(fn, n):
    jax.block_until_ready(fn(0))  # compile
    t = time.perf_counter()
    for i in range(1, n + 1):
        out = fn(i)
    jax.block_until_ready(out)
    return n / (time.perf_counter() - t)


def bench(name: str, batch: int, steps: int) -> None:
    z = np.load(SHARED / "reference" / "crystalformer_logp_alex.npz")
    cfg = ModelConfig.from_dict(CONFIGS[name])
    arrays, _ = clean_arrays({k: z[k] for k in ("G", "L", "XYZ", "A", "W")}, n_max=cfg.n_max,
                             atom_types=cfg.atom_types, wyck_types=cfg.wyck_types)
    order = DataOrder(len(arrays["G"]), batch, 0)
    t = fresh_train_step(cfg)
    graphdef, rest, p, state, train_step = t.graphdef, t.rest, t.params, t.state, t.train_step

    def full(i):
        nonlocal state
        state, out = train_step(state, rest, jax.device_put(take(arrays, order.indices(i)), t.data_sh), np.int32(i))
        return out["loss"]

    @jax.jit
    def bare_grad(params, batch):
        return jax.value_and_grad(lambda q: loss_fn(nnx.merge(graphdef, q, rest, copy=True), batch,
                                                    deterministic=True)[0])(params)
    fixed = take(arrays, order.indices(0))

    def bare(i):
        return bare_grad(p, fixed)[0]

    t0 = time.perf_counter()
    base = _time(bare, steps)
    ours = _time(full, steps)
    print(f"{name}: batch {batch}, {len(jax.devices())} device(s) [{jax.devices()[0].platform}], "
          f"{steps} timed steps, bench wall {time.perf_counter() - t0:.0f} s (2 compiles included)")
    print(f"  bare jitted value_and_grad : {base:7.3f} steps/s")
    print(f"  full train step            : {ours:7.3f} steps/s  ({ours / base:.2f}x of bare)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", nargs="*", default=["small", "paper"])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    for c in a.configs:
        bench(c, a.batch, a.steps)
