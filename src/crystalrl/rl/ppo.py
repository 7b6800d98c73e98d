"""PPO fine-tuning of CrystalFormer: the paper's Eq. (1) with PPO-clip (Appendix C).

Each step samples a batch from the current policy (space groups from the training
distribution or a list), scores it with a reward (higher is better), and takes
`ppo_epochs` full-batch gradient steps on

    J = mean(min(rho * A_hat, clip(rho, 1 - eps, 1 + eps) * A_hat)),
    rho = p_theta(x) / p_old(x),   A_hat = (r - b) - beta * (log p_theta(x) - log p_base(x)),

with b an exponential moving average of the batch mean reward (b_1 = mean r_1,
b <- ema * b + (1 - ema) * mean r). As in the public code, the KL term is the
single-sample log ratio and carries gradient, so beta pulls the policy toward the
frozen base model directly. A run keeps Orbax checkpoints (parameters, optimizer
state, baseline, metrics) and, because the randomness of step t is fold_in(seed, t),
a run resumed after a kill logs the same metrics as one that never stopped.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx

from crystalrl.io import write_parquet_atomic
from crystalrl.model.likelihood import logp_terms
from crystalrl.model.sampler import sample
from crystalrl.rewards import RewardResult
from crystalrl.train.checkpoint import CheckpointStore, abstract_like, params_of
from crystalrl.train.loop import make_optimizer
from crystalrl.wyckoff import N_SG

_LOG = logging.getLogger("crystalrl.ppo")
TOKENS = ("G", "L", "XYZ", "A", "W")


@dataclass(frozen=True)
class PPOConfig:
    """PPO settings (config section `ppo`); defaults are the paper's Table S1."""

    beta: float = 0.1
    clip_eps: float = 0.2
    ema: float = 0.95
    ppo_epochs: int = 3
    steps: int = 200
    batch_size: int = 1000
    lr: float = 1e-5
    clip_grad: float = 1.0
    ckpt_every: int = 5
    seed: int = 7
    temperature: float = 1.0
    top_p: float = 1.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PPOConfig":
        """Pick this class's keys out of a config section (reward, start_from... are not PPO maths)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def spacegroup_probs(spacegroups: str | Sequence[int], train_G: np.ndarray | None = None) -> np.ndarray:
    """(230,) probabilities: the training histogram for "train", else uniform over a list."""
    p = np.zeros(N_SG)
    if isinstance(spacegroups, str):
        if spacegroups != "train" or train_G is None:
            raise ValueError(f"spacegroups must be 'train' (with training tokens) or a list, got {spacegroups!r}")
        np.add.at(p, np.asarray(train_G, int) - 1, 1.0)
    else:
        p[np.asarray(spacegroups, int) - 1] = 1.0
    if p.sum() == 0:
        raise ValueError("no space group to sample from")
    return p / p.sum()


def draw_spacegroups(key: jax.Array, sg_probs, n: int) -> jax.Array:
    """(n,) space-group numbers 1..230 drawn from `sg_probs` (as from `spacegroup_probs`)."""
    return jax.random.choice(key, N_SG, (n,), p=jnp.asarray(sg_probs)) + 1


def total_logp(model, batch) -> jax.Array:
    """log p(W, A, X, L | G) per sample (B,), dropout off."""
    t = logp_terms(model, *(batch[k] for k in TOKENS), deterministic=True)
    return t["logp_w"] + t["logp_xyz"] + t["logp_a"] + t["logp_l"]


def _make_update(graphdef, rest, tx, beta: float, eps: float):
    """One jitted PPO gradient step on the whole batch."""

    def objective(params, batch, old_logp, ref_logp, adv):
        lp = total_logp(nnx.merge(graphdef, params, rest, copy=True), batch)
        a_hat = adv - beta * (lp - ref_logp)
        ratio = jnp.exp(lp - old_logp)
        surrogate = jnp.minimum(ratio * a_hat, jnp.clip(ratio, 1 - eps, 1 + eps) * a_hat)
        clipped = jnp.mean((jnp.abs(ratio - 1) > eps).astype(jnp.float32))
        return -jnp.mean(surrogate), dict(clip_frac=clipped, ratio_max=jnp.max(ratio))

    @jax.jit
    def update(state, batch, old_logp, ref_logp, adv):
        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(
            state["params"], batch, old_logp, ref_logp, adv)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return dict(params=optax.apply_updates(state["params"], updates), opt_state=opt_state), \
            dict(loss=loss, grad_norm=optax.global_norm(grads), **aux)

    return update


def _logp_fn(graphdef, rest):
    @jax.jit
    def logp(params, batch):
        return total_logp(nnx.merge(graphdef, params, rest, copy=True), batch)
    return logp


def run_ppo(policy, reference, reward_fn: Callable[[list], RewardResult], decode: Callable,
            sg_probs: np.ndarray, cfg: PPOConfig, *, ckpt_dir: str | None = None,
            metrics_path: str | None = None, log: logging.Logger | None = None,
            stop_after: int | None = None):
    """Fine-tune `policy` (an nnx CrystalFormer) with PPO; returns (policy, metrics DataFrame).

    `reference` is the frozen model of the KL term (the start model). `decode` maps the
    sampler's token dict to a list of Structures (None where a sample is unusable).
    `stop_after` stops after that many steps as if killed (tests of resumption).
    """
    log = log or _LOG
    graphdef, params0, rest = nnx.split(policy, nnx.Param, ...)
    ref_params = params_of(reference)
    tx, _ = make_optimizer(cfg.lr, 0.0, cfg.clip_grad)
    update = _make_update(graphdef, rest, tx, cfg.beta, cfg.clip_eps)
    logp = _logp_fn(graphdef, rest)
    state = dict(params=nnx.to_pure_dict(params0), opt_state=None)
    state["opt_state"] = tx.init(state["params"])
    baseline, history, start = None, [], 0

    run_id = dict(cfg=cfg.__dict__, n_params=int(sum(x.size for x in jax.tree.leaves(state["params"]))))
    store = CheckpointStore(ckpt_dir) if ckpt_dir else None
    if store is not None and store.latest_step() is not None:
        meta = store.read_meta()
        if meta.get("run") == run_id:
            start, state, meta = store.restore_latest(abstract_like(state))
            baseline, history = meta["baseline"], meta["history"]
            log.info("resumed PPO from %s at step %d", ckpt_dir, start)
        else:
            log.warning("checkpoints in %s belong to another PPO run; starting afresh", ckpt_dir)
            store.clear()

    key0 = jax.random.key(cfg.seed)
    for step in range(start, cfg.steps):
        t0 = time.time()
        k_g, k_s = jax.random.split(jax.random.fold_in(key0, step))
        G = draw_spacegroups(k_g, sg_probs, cfg.batch_size)
        nnx.update(policy, _as_state(params0, state["params"]))
        out = sample(policy, k_s, G, temperature=cfg.temperature, top_p=cfg.top_p)
        t_sample = time.time() - t0
        structures = decode(out)
        rr = reward_fn(structures)
        r = np.asarray(rr.reward, np.float64)
        baseline = float(r.mean()) if baseline is None else cfg.ema * baseline + (1 - cfg.ema) * float(r.mean())
        batch = {k: jnp.asarray(out[k]) for k in TOKENS}
        old_logp = logp(state["params"], batch)
        ref_logp = logp(ref_params, batch)
        adv = jnp.asarray(r - baseline, old_logp.dtype)
        for _ in range(cfg.ppo_epochs):
            state, aux = update(state, batch, old_logp, ref_logp, adv)
        kl = np.asarray(old_logp - ref_logp)
        row = dict(step=step + 1, reward_mean=float(r.mean()), reward_std=float(r.std()),
                   baseline=baseline, kl=float(kl.mean()), frac_valid=float(np.mean(rr.valid)),
                   n_atoms_mean=float(np.mean(out["n_atoms"])) if "n_atoms" in out else np.nan,
                   loss=float(aux["loss"]), clip_frac=float(aux["clip_frac"]),
                   grad_norm=float(aux["grad_norm"]))
        for name, v in rr.extras.items():
            row[f"{name}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
        row.update(time_sample_s=t_sample, time_step_s=time.time() - t0)
        history.append(row)
        log.info("ppo step %d/%d  reward %.4f +- %.4f  kl %.4f  valid %.2f  %.1fs", step + 1, cfg.steps,
                 row["reward_mean"], row["reward_std"], row["kl"], row["frac_valid"], row["time_step_s"])
        done = step + 1
        if metrics_path:
            write_parquet_atomic(pd.DataFrame(history), metrics_path)
        if store is not None and (done % cfg.ckpt_every == 0 or done == cfg.steps):
            store.save(done, state, dict(step=done, baseline=baseline, history=history, run=run_id))
        if stop_after is not None and done >= stop_after:
            break
    if store is not None:
        store.close()
    nnx.update(policy, _as_state(params0, state["params"]))
    return policy, pd.DataFrame(history)


def _as_state(template: nnx.State, params: dict) -> nnx.State:
    """A copy of the nnx.State `template` holding the plain-dict `params`."""
    state = jax.tree.map(lambda x: x, template)
    nnx.replace_by_pure_dict(state, params)
    return state
