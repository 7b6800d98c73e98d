"""Sampling throughput: KV-cached jitted sampler vs a recompute-everything baseline.

The baseline is the public code's strategy, kept minimal: for every token, a full
forward pass over the padded 5*n_max sequence, in float64, no early exit. Both are
timed in the same run (after a warm-up call that compiles), so machine load
affects both sides. Parameters are a random init (the throughput does not depend
on their values beyond sequence length; random init gives long sequences, the
slow case).

    OMP_NUM_THREADS=1 python bench/bench_sample.py            # paper + small config
    python bench/bench_sample.py --quick                       # small config only
"""
from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crystalrl.model import likelihood as lk
from crystalrl.model import sampler as sp
from crystalrl.model.config import ModelConfig
from crystalrl.model.store import build_model
from crystalrl.model.von_mises import sample_von_mises_centered

CONFIGS = {
    "paper": ModelConfig.from_dict(dict(dropout_rate=0.0, attn_dropout=0.0)),
    "small": ModelConfig.from_dict(dict(num_layers=4, num_heads=8, key_size=32, dropout_rate=0.0, attn_dropout=0.0)),
}


@functools.partial(jax.jit, static_argnames="graphdef")
def _baseline(graphdef, state, key, G_b):
    """Full forward pass per token (float64 when x64 is on), no cache, no early exit."""
    model = nnx.merge(graphdef, state)
    cfg = model.cfg
    B, n = G_b.shape[0], cfg.n_max
    W = jnp.zeros((B, n), jnp.int32)
    A = jnp.zeros((B, n), jnp.int32)
    XYZ = jnp.zeros((B, n, 3), jnp.float64)
    W = W.at[:, 0].set(jax.random.categorical(key, lk.first_w_logprob(model.first_w_logits(G_b), G_b)))

    def body(t, carry):
        W, A, XYZ, key = carry
        key, k1, k2 = jax.random.split(key, 3)
        out = model(G_b, XYZ, A, W, deterministic=True)[:, t + 1]
        i, kind = t // 5, t % 5
        a = jax.random.categorical(k1, lk.a_logprob(out[:, :cfg.atom_types], W[:, i]))
        logw, loc, kappa = lk.coord_params(out, cfg)
        k = jax.random.categorical(k1, logw)
        x = sp._pick(loc, k) + sample_von_mises_centered(k2, sp._pick(kappa, k))
        x = x / (2 * jnp.pi) + 0.5
        w = jax.random.categorical(k1, lk.next_w_logprob(out[:, :cfg.wyck_types], G_b, W[:, i]))
        A = jnp.where(kind == 0, A.at[:, i].set(a), A)
        XYZ = jnp.where((kind >= 1) & (kind <= 3),
                        XYZ.at[:, i, jnp.clip(kind - 1, 0, 2)].set(x - jnp.floor(x)), XYZ)
        W = jnp.where((kind == 4) & (i + 1 < n), W.at[:, jnp.minimum(i + 1, n - 1)].set(w), W)
        return W, A, XYZ, key

    return jax.lax.fori_loop(0, 5 * n - 1, body, (W, A, XYZ, key))


def time_ours(model, B, n_total, seed=0):
    G = np.random.default_rng(seed).integers(1, 231, size=B)
    warm = min(B, sp.chunk_rows(model.cfg))  # same chunk shape -> compiles the timed program
    sp.sample(model, jax.random.key(seed), G[:warm], chunk_size=warm)
    t0, done, sites = time.perf_counter(), 0, []
    while done < n_total:
        s = sp.sample(model, jax.random.key(seed + 1 + done), G, chunk_size=warm)
        done += B
        sites.append((s.W > 0).sum(1).mean())
    return done / (time.perf_counter() - t0), float(np.mean(sites))


def time_baseline(model, B, seed=0):
    G = jnp.asarray(np.random.default_rng(seed).integers(1, 231, size=B))
    with jax.enable_x64(True):
        graphdef, state = nnx.split(model)
        state = jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
        jax.block_until_ready(_baseline(graphdef, state, jax.random.key(seed), G))  # compile
        t0 = time.perf_counter()
        jax.block_until_ready(_baseline(graphdef, state, jax.random.key(seed + 1), G))
        return B / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["paper", "small"], choices=list(CONFIGS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1000, 100])
    ap.add_argument("--baseline-batch", type=int, nargs="+", default=[5, 50],
                    help="baseline batch per config (it is ~100x slower)")
    ap.add_argument("--quick", action="store_true", help="small config, batch 100 only")
    args = ap.parse_args()
    if args.quick:
        args.configs, args.batches, args.baseline_batch = ["small"], [100], [20]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; public code: "
          "0.074 samples/s (paper config), 0.75 samples/s (small) on this CPU class")
    for name, bb in zip(args.configs, args.baseline_batch):
        model = build_model(CONFIGS[name], seed=0)
        base = time_baseline(model, bb)
        print(f"[{name}] baseline (full forward per token, float64, no early exit), "
              f"batch {bb}: {base:.3f} samples/s", flush=True)
        for B in args.batches:
            rate, sites = time_ours(model, B, B)
            print(f"[{name}] KV-cached sampler, batch {B} ({B} samples, mean {sites:.1f} sites): "
                  f"{rate:.2f} samples/s = {rate / base:.1f}x baseline"
                  + (f", {rate / 0.074:.0f}x public 0.074/s" if name == "paper" else ""), flush=True)


if __name__ == "__main__":
    main()
