"""Training throughput: our full step vs a bare jitted value_and_grad of the same loss.

The bare baseline is the training loss's gradient and nothing else: dropout on (as in
training), one fixed batch already on the devices. The full step adds what `train` does
each step: gradient clipping + Adam + schedule, dropout reseeding, the host-side batch
gather and its placement on the device mesh, and (`--micro`) gradient accumulation over
micro-batches. Both run at the same global batch; the ratio says what the machinery
costs. `--host-devices N` splits the host into N XLA devices (data parallel on a CPU).

    python bench/bench_train.py [small|paper ...] [--batch 100] [--steps 5] [--micro 25] [--host-devices 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if "--host-devices" in sys.argv:  # before JAX starts
    n = sys.argv[sys.argv.index("--host-devices") + 1]
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from crystalrl.distributed import global_batch  # noqa: E402
from crystalrl.model.config import ModelConfig  # noqa: E402
from crystalrl.model.likelihood import loss_fn  # noqa: E402
from crystalrl.train.data import DataOrder, clean_arrays, take  # noqa: E402
from crystalrl.train.loop import fresh_train_step, micro_batches  # noqa: E402

CONFIGS = {"small": dict(num_layers=2, num_heads=4, key_size=16, model_size=32), "paper": {}}
SHARED = Path(os.environ.get("CRYSTALRL_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _time(fn, n):
    jax.block_until_ready(fn(0))  # compile
    t = time.perf_counter()
    for i in range(1, n + 1):
        out = fn(i)
    jax.block_until_ready(out)
    return n / (time.perf_counter() - t)


def bench(name: str, batch: int, steps: int, micro: int | None) -> None:
    z = np.load(SHARED / "reference" / "crystalformer_logp_alex.npz")
    cfg = ModelConfig.from_dict(CONFIGS[name])
    arrays, _ = clean_arrays({k: z[k] for k in ("G", "L", "XYZ", "A", "W")}, n_max=cfg.n_max,
                             atom_types=cfg.atom_types, wyck_types=cfg.wyck_types)
    order = DataOrder(len(arrays["G"]), batch, 0)
    n_dev = len(jax.devices())
    t = fresh_train_step(cfg)
    graphdef, rest, p = t.graphdef, t.rest, t.params

    @jax.jit
    def bare_grad(params, rest, batch):  # the same training loss, dropout on, nothing around it
        return jax.value_and_grad(lambda q: loss_fn(nnx.merge(graphdef, q, rest, copy=True), batch,
                                                    deterministic=False)[0])(params)
    fixed = global_batch(take(arrays, order.indices(0)), t.data_sh)

    def bare(i):
        return bare_grad(p, rest, fixed)[0]

    def full_step(n_micro):
        f = fresh_train_step(cfg, n_micro=n_micro)
        state = f.state

        def step(i):
            nonlocal state
            state, out = f.train_step(state, f.rest, global_batch(take(arrays, order.indices(i)), f.data_sh),
                                      np.int32(i))
            return out["loss"]
        return step

    t0 = time.perf_counter()
    rates = {"bare jitted value_and_grad": _time(bare, steps), "full train step": _time(full_step(1), steps)}
    if micro:
        n_micro, rows = micro_batches(batch, micro, n_dev)
        rates[f"full, {n_micro} micro-batches of {rows}"] = _time(full_step(n_micro), steps)
    load = os.getloadavg()[0]
    print(f"{name}: global batch {batch}, {n_dev} device(s) [{jax.devices()[0].platform}], {steps} timed steps, "
          f"bench wall {time.perf_counter() - t0:.0f} s (compiles included); load average {load:.1f} at the end")
    base = rates["bare jitted value_and_grad"]
    for label, rate in rates.items():
        print(f"  {label:34s}: {rate:7.3f} steps/s  ({rate / base:.2f}x of bare)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", nargs="*", default=["small", "paper"])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--micro", type=int, default=None, help="also time the step with micro-batches of this size")
    ap.add_argument("--host-devices", type=int, default=None, help="split the CPU into this many XLA devices")
    a = ap.parse_args()
    for c in a.configs:
        bench(c, a.batch, a.steps, a.micro)
