"""PPO fine-tuning of CrystalFormer: the paper's Eq. (1) with PPO-clip (Appendix C), and
the GRPO and REINFORCE variants of its advantage and step (`ppo.algorithm`, `advantages`).

Each step samples a batch from the current policy (space groups from the training
distribution or a list), scores it with a reward (higher is better), and takes
`ppo_epochs` full-batch gradient steps on

    J = mean(min(rho * A_hat, clip(rho, 1 - eps, 1 + eps) * A_hat)),
    rho = p_theta(x) / p_old(x),   A_hat = (r - b) - beta * (log p_theta(x) - log p_base(x)),

with b an exponential moving average of the batch mean reward (b_1 = mean r_1,
b <- ema * b + (1 - ema) * mean r; samples a guard abstains, `crystalrl.rl.guards`, get
A = 0 before the KL term and stay out of mean r). As in the public code, the KL term is the
single-sample log ratio and carries gradient, so beta pulls the policy toward the
frozen base model directly. A run keeps Orbax checkpoints (parameters, optimizer
state, baseline, metrics) and, because the randomness of step t is fold_in(seed, t),
a run resumed after a kill logs the same metrics as one that never stopped.

The entropy bonus (`entropy_coef` c > 0) enters A_hat like the KL term, with a uniform
reference: A_hat -= c * (log p_theta(x) - mean_batch log p_old). Its gradient at rho = 1,
-c (log p + 1 - mean) grad log p, is the score-function gradient of c * H(p_theta), H
estimated by -log p of the sampled crystal (logged per step as `entropy`); c = 0 leaves
the step as it was, bit for bit. DPO/IPO (offline, from pairs) live in `crystalrl.rl.dpo`.

The experience buffer of CrystalFormer-CSP (`buffer_gamma` gamma > 0; `crystalrl.rl.buffer`)
keeps the best samples so far and adds gamma * mean log p_theta(buffer draw) to J at every
update, a separate term of the jitted objective; gamma = 0 builds no buffer and leaves the
step, its metrics and its checkpoints as they were, bit for bit.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from crystalrl.config import SectionConfig
from crystalrl.devices import release_torch_cache
from crystalrl.digest import digest_arrays
from crystalrl.model.condition import atom_bias, atom_mask, lacks_required
from crystalrl.model.likelihood import logp_terms
from crystalrl.model.sampler import SampleBatch, sample
from crystalrl.model.store import abstract_like, params_of
from crystalrl.rewards import RewardResult
from crystalrl.rl.buffer import BUFFER_KEYS, Buffer
from crystalrl.spacegroups import draw_spacegroups
from crystalrl.tokenizer import TOKEN_KEYS
from crystalrl.timelimit import StopRequest, TimeLimit, stop_record, stops_text
from crystalrl.train.checkpoint import CheckpointStore
from crystalrl.train.loop import data_mesh, make_optimizer, micro_batches

_LOG = logging.getLogger("crystalrl.ppo")


@dataclass(frozen=True)
class PPOConfig(SectionConfig):
    """Settings of one PPO run: config section `ppo` merged with `ppo_runs.<name>`
    (see `crystalrl.config.ppo_run_config`); defaults (Table S1) live in the schema."""

    SECTION = "ppo"
    OTHER_KEYS = ("runs",)  # the names of the runs, not a run's setting

    reward: str
    algorithm: str
    group_size: int
    start_from: str
    beta: float
    clip_eps: float
    ema: float
    ppo_epochs: int
    steps: int
    batch_size: int
    minibatch: int | None
    micro_batch: int | None
    lr: float
    clip_grad: float
    spacegroups: str | list
    ehull_clip: float
    ckpt_every: int
    seed: int
    temperature: float
    top_p: float
    guards: dict
    elements: list | None
    composition_bias: dict
    require_elements: list
    entropy_coef: float
    pairs: str | None
    dpo_beta: float
    label_smoothing: float
    dpo_gamma: float
    pair_min_gap: float
    pair_chosen_max: float | None
    buffer_gamma: float
    buffer_fraction: float
    buffer_size: int
    buffer_batch: int


def total_logp(model, batch) -> jax.Array:
    """log p(W, A, X, L | G) per sample (B,), dropout off."""
    t = logp_terms(model, *(batch[k] for k in TOKEN_KEYS), deterministic=True)
    return t["logp_w"] + t["logp_xyz"] + t["logp_a"] + t["logp_l"]


def advantages(r: np.ndarray, baseline: float | None, abstain: np.ndarray, G: np.ndarray, algorithm: str) -> np.ndarray:
    """(B,) advantages before the KL term; zero where a sample abstains (`crystalrl.rl.guards`).

    ppo, reinforce: r - b, b the EMA baseline (the paper). grpo (DeepSeekMath's group-relative
    advantage): (r - mean_g r) / (std_g r + 1e-6) over the scored samples of the same space
    group g; a group with one scored sample gets 0 (nothing to compare it with).
    """
    if algorithm != "grpo":
        return np.where(abstain, 0.0, r - (baseline or 0.0))
    adv = np.zeros_like(r)
    for g in np.unique(G):
        m = (G == g) & ~abstain
        if m.sum() > 1:
            adv[m] = (r[m] - r[m].mean()) / (r[m].std() + 1e-6)
    return adv


def _make_update(graphdef, rest, tx, beta: float, eps: float, mesh, n_micro: int = 1, entropy_coef: float = 0.0,
                 buffer_gamma: float = 0.0):
    """One jitted PPO gradient step on a (mini)batch, data parallel over `mesh`: the batch split
    over its devices, the state replicated, the gradient all-reduced by XLA. With `n_micro` > 1
    the gradient is accumulated over that many equal micro-batches (the same step, a fraction
    of the activation memory; rows j, j + n, ... form micro-batch j, as in pretraining).
    With `buffer_gamma` > 0 the step takes a sixth argument, a draw of buffer rows (split over
    the devices and micro-batches like the batch), and the loss subtracts
    buffer_gamma * mean log p_theta(draw) (`crystalrl.rl.buffer`), logged as `buffer_logp`."""
    repl, data_sh = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    def objective(params, batch, old_logp, ref_logp, adv, *buffer_draw):
        model = nnx.merge(graphdef, params, rest, copy=True)
        lp = total_logp(model, batch)
        a_hat = adv - beta * (lp - ref_logp)
        if entropy_coef:  # the entropy bonus: a KL term against a uniform reference (module docstring)
            a_hat = a_hat - entropy_coef * (lp - jnp.mean(old_logp))
        ratio = jnp.exp(lp - old_logp)
        surrogate = jnp.minimum(ratio * a_hat, jnp.clip(ratio, 1 - eps, 1 + eps) * a_hat)
        clipped = jnp.mean((jnp.abs(ratio - 1) > eps).astype(jnp.float32))
        loss, aux = -jnp.mean(surrogate), dict(clip_frac=clipped, ratio_max=jnp.max(ratio))
        if buffer_gamma:  # the likelihood term on the experience buffer (crystalrl.rl.buffer)
            buffer_logp = jnp.mean(total_logp(model, *buffer_draw))
            loss, aux = loss - buffer_gamma * buffer_logp, dict(aux, buffer_logp=buffer_logp)
        return loss, aux

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def accumulated(params, *rows):
        micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // n_micro, n_micro, *x.shape[1:]), 0, 1),
                             rows)
        micro = jax.lax.with_sharding_constraint(micro, NamedSharding(mesh, P(None, "data")))

        def body(acc, mb):  # aux: ratio_max the largest, the others summed (then averaged)
            (loss, aux), g = grad_fn(params, *mb)
            total_g, total_loss, total_aux = acc
            total_aux = {k: jnp.maximum(total_aux[k], v) if k == "ratio_max" else total_aux[k] + v
                         for k, v in aux.items()}
            return (jax.tree.map(jnp.add, total_g, g), total_loss + loss, total_aux), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        aux0 = dict(clip_frac=0.0, ratio_max=-jnp.inf, **(dict(buffer_logp=0.0) if buffer_gamma else {}))
        (g, loss, aux), _ = jax.lax.scan(body, (zeros, 0.0, aux0), micro)
        aux = {k: v if k == "ratio_max" else v / n_micro for k, v in aux.items()}
        return (loss / n_micro, aux), jax.tree.map(lambda x: x / n_micro, g)

    # state; batch, old_logp, ref_logp, adv (and the buffer draw when buffer_gamma > 0)
    @partial(jax.jit, in_shardings=(repl,) + (data_sh,) * (5 if buffer_gamma else 4), out_shardings=(repl, repl))
    def update(state, *rows):
        if n_micro == 1:
            (loss, aux), grads = grad_fn(state["params"], *rows)
        else:
            (loss, aux), grads = accumulated(state["params"], *rows)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return dict(params=optax.apply_updates(state["params"], updates), opt_state=opt_state), \
            dict(loss=loss, grad_norm=optax.global_norm(grads), **aux)

    return update


def _logp_fn(graphdef, rest, mesh):
    @partial(jax.jit, in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))),
             out_shardings=NamedSharding(mesh, P("data")))
    def logp(params, batch):
        return total_logp(nnx.merge(graphdef, params, rest, copy=True), batch)
    return logp


def run_ppo(policy, reference, reward_fn: Callable[[list], RewardResult],
            sg_probs: np.ndarray, cfg: PPOConfig, *, decode: Callable[[SampleBatch], list] | None = None,
            ckpt_dir: str | None = None, run_key: dict | None = None,
            on_metrics: Callable[[pd.DataFrame], None] | None = None, log: logging.Logger | None = None,
            stop_after: int | None = None):
    """Fine-tune `policy` (an nnx CrystalFormer) with PPO; returns (policy, metrics DataFrame).

    `reference` is the frozen model of the KL term (the start model). The reward sees
    the decoded structures (None where a sample does not decode), or what `decode`
    makes of the sampled batch (a toy reward on tokens, in tests).
    `ckpt_dir`: Orbax checkpoints every `ckpt_every` steps; a rerun of the same run resumes
    from the newest intact one. `run_key`: JSON-able identity of what the reward reads
    (its settings and input digests); checkpoints are resumed only when it, the settings,
    the start and reference parameters and `sg_probs` are all the same.
    A loss, KL or baseline that turns NaN or inf stops the run (FloatingPointError).
    `stop_after` stops after that many steps as if killed (tests of resumption).
    """
    log = log or _LOG
    mesh = data_mesh(jax.local_devices())
    n_dev = mesh.devices.size
    n_mini, mini = micro_batches(cfg.batch_size, cfg.minibatch, n_dev)  # the same divisibility rules
    n_micro, _ = micro_batches(mini, cfg.micro_batch, n_dev)
    repl, data_sh = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    graphdef, params0, rest = nnx.split(policy, nnx.Param, ...)
    rest = jax.device_put(rest, repl)
    ref_params = jax.device_put(params_of(reference), repl)
    tx, _ = make_optimizer(cfg.lr, 0.0, cfg.clip_grad)
    # reinforce: one step at ratio 1 without clipping, whose gradient is A_hat * grad log p
    epochs, eps = (1, np.inf) if cfg.algorithm == "reinforce" else (cfg.ppo_epochs, cfg.clip_eps)
    if cfg.algorithm == "grpo" and cfg.batch_size % cfg.group_size:
        raise ValueError(f"config key 'ppo.group_size': {cfg.group_size} does not divide ppo.batch_size "
                         f"{cfg.batch_size}")
    if cfg.algorithm not in ("ppo", "grpo", "reinforce"):
        raise ValueError(f"config key 'ppo.algorithm': {cfg.algorithm!r} is offline; run it with crystalrl.rl.dpo")
    update = _make_update(graphdef, rest, tx, cfg.beta, eps, mesh, n_micro, cfg.entropy_coef)
    buffer = update_buffer = None  # the experience buffer (crystalrl.rl.buffer): only with buffer_gamma > 0
    if cfg.buffer_gamma:
        if cfg.buffer_batch % (n_micro * n_dev):
            raise ValueError(f"config key 'ppo.buffer_batch': {cfg.buffer_batch} must be a multiple of the {n_dev} "
                             f"device(s) times the {n_micro} micro-batch(es) of each update (ppo.micro_batch)")
        update_buffer = _make_update(graphdef, rest, tx, cfg.beta, eps, mesh, n_micro, cfg.entropy_coef,
                                     cfg.buffer_gamma)
        buffer = Buffer.empty(cfg.buffer_size, policy.cfg.n_max)
    # conditioning steers the draw; the log p of the ratio and the KL is the model's own (crystalrl.model.condition)
    mask, bias = atom_mask(cfg.elements, policy.cfg), atom_bias(cfg.composition_bias, policy.cfg)
    logp = _logp_fn(graphdef, rest, mesh)
    state = dict(params=nnx.to_pure_dict(params0), opt_state=None)
    state["opt_state"] = tx.init(state["params"])
    state = jax.device_put(state, repl)
    baseline, history, start, stops = None, [], 0, []

    # A checkpoint is resumed only by the run that wrote it: the same settings (all but the
    # step count, so a run can be extended), start and reference parameters by value, space
    # group distribution and reward inputs (`run_key`). Anything else is set aside, never resumed.
    run_id = dict(cfg=run_settings(cfg),
                  start_params=digest_arrays(state["params"]), reference_params=digest_arrays(ref_params),
                  spacegroup_probs=digest_arrays(np.asarray(sg_probs, np.float64)), inputs=run_key or {})
    store = CheckpointStore(ckpt_dir, log=log) if ckpt_dir else None
    if store is not None:
        resumed = store.resume(abstract_like(_with_buffer(state, buffer), repl), run_id, max_step=cfg.steps)
        if resumed is not None:
            start, state, meta = resumed
            if buffer is not None:  # the buffer is saved beside the parameters
                buffer = Buffer.from_arrays(state.pop("buffer"))
            baseline, history, stops = meta["baseline"], meta["history"], meta.get("stops", [])
            log.info("resumed PPO from %s at step %d", ckpt_dir, start)
            if stops:
                log.info("this run stopped for Slurm time limits %d time(s) so far: %s", len(stops), stops_text(stops))

    key0 = jax.random.key(cfg.seed)
    with StopRequest(log) as stop:
        for step in range(start, cfg.steps):
            t0 = time.time()
            k_step = jax.random.fold_in(key0, step)
            k_g, k_s = jax.random.split(k_step)
            k_buffer = jax.random.fold_in(k_step, 1)  # the buffer draw of update u: fold_in(k_buffer, u)
            if cfg.algorithm == "grpo":  # groups of group_size samples share a space group
                G = np.repeat(draw_spacegroups(k_g, sg_probs, cfg.batch_size // cfg.group_size), cfg.group_size)
            else:
                G = draw_spacegroups(k_g, sg_probs, cfg.batch_size)
            nnx.update(policy, _as_state(params0, state["params"]))
            out = sample(policy, k_s, G, temperature=cfg.temperature, top_p=cfg.top_p, atom_mask=mask, atom_bias=bias,
                         devices=list(mesh.devices.flat))
            t_sample = time.time() - t0
            structures = decode(out) if decode is not None else out.decode()[0]
            rr = reward_fn(structures)
            release_torch_cache()  # the reward's MLIP hands its GPU cache back before JAX's update
            r = np.asarray(rr.reward, np.float64)
            if cfg.require_elements:  # crystalrl.model.condition: what the sampler cannot force, the reward teaches
                lacking = lacks_required(structures, cfg.require_elements)
                r = np.where(lacking, r.min(), r)
                rr.extras["lacks_required"] = lacking.astype(np.float64)
            # samples a guard abstains (crystalrl.rl.guards) get zero advantage and stay out of the baseline
            abstain = np.zeros(r.shape, bool) if rr.abstain is None else np.asarray(rr.abstain, bool)
            if not abstain.all():
                r_mean = float(r.mean()) if rr.abstain is None else float(r[~abstain].mean())
                baseline = r_mean if baseline is None else cfg.ema * baseline + (1 - cfg.ema) * r_mean
            tokens = out.tokens()
            if buffer is not None:  # the step's best valid, scored samples enter the buffer before its updates
                buffer = buffer.insert(tokens, r, np.asarray(rr.valid, bool) & ~abstain, cfg.buffer_fraction)
            batch = jax.device_put({k: np.asarray(v) for k, v in tokens.items()}, data_sh)
            old_logp = logp(state["params"], batch)
            ref_logp = logp(ref_params, batch)
            adv = jax.device_put(np.asarray(advantages(r, baseline, abstain, G, cfg.algorithm), np.float32), data_sh)
            # with a non-empty buffer each update adds the likelihood of its own draw; else () and the plain step
            draws = _buffer_draws(buffer, k_buffer, cfg.buffer_batch, data_sh)
            step_update = update_buffer if buffer is not None and buffer.rows else update
            for epoch in range(epochs):
                if n_mini == 1:  # the paper: every epoch one step on the whole batch
                    state, aux = step_update(state, batch, old_logp, ref_logp, adv, *next(draws))
                    continue
                order = np.random.default_rng([cfg.seed, step, epoch]).permutation(cfg.batch_size)
                host = dict(tokens, old=np.asarray(old_logp), ref=np.asarray(ref_logp), adv=np.asarray(adv))
                for part in order.reshape(n_mini, mini):
                    mb = jax.device_put({k: np.asarray(v)[part] for k, v in host.items()}, data_sh)
                    old, ref, a = mb.pop("old"), mb.pop("ref"), mb.pop("adv")
                    state, aux = step_update(state, mb, old, ref, a, *next(draws))
            kl = np.asarray(old_logp - ref_logp)
            row = dict(step=step + 1, reward_mean=float(r.mean()), reward_std=float(r.std()),
                       baseline=baseline, kl=float(kl.mean()), entropy=float(-np.mean(np.asarray(old_logp))),
                       frac_valid=float(np.mean(rr.valid)),
                       n_atoms_mean=float(np.mean(out.n_atoms)),
                       loss=float(aux["loss"]), clip_frac=float(aux["clip_frac"]),
                       grad_norm=float(aux["grad_norm"]))
            if buffer is not None:  # buffer_logp: mean log p of the last update's draw (NaN while empty)
                row.update(buffer_rows=buffer.rows, buffer_reward_mean=buffer.reward_mean(),
                           buffer_logp=float(aux.get("buffer_logp", np.nan)))
            for name, v in rr.extras.items():
                row[f"{name}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
            row.update(time_sample_s=t_sample, time_step_s=time.time() - t0)
            history.append(row)
            done = step + 1
            log.info("ppo step %d/%d  reward %.4f +- %.4f  kl %.4f  valid %.2f  %.1fs", step + 1, cfg.steps,
                     row["reward_mean"], row["reward_std"], row["kl"], row["frac_valid"], row["time_step_s"])
            if not all(np.isfinite(row[k]) for k in ("loss", "grad_norm", "kl", "baseline") if row[k] is not None):
                raise FloatingPointError(
                    f"PPO diverged at step {done}: loss {row['loss']}, grad norm {row['grad_norm']}, kl {row['kl']}, "
                    f"baseline {row['baseline']}. The newest checkpoint before this step is kept; lower ppo.lr "
                    "(or check the reward for NaN) and rerun.")
            if on_metrics is not None:  # the stage writes the table after every step: a live curve
                on_metrics(pd.DataFrame(history))
            save_or_stop(done, cfg, stop, store, _with_buffer(state, buffer),
                         dict(baseline=baseline, history=history, run=run_id), stops, ckpt_dir)
            if stop_after is not None and done >= stop_after:
                break
    if store is not None:
        store.close()
    nnx.update(policy, _as_state(params0, state["params"]))
    return policy, pd.DataFrame(history)


def save_or_stop(done: int, cfg, stop, store, state, meta: dict, stops: list, ckpt_dir) -> None:
    """After step `done` of an RL loop (PPO, DPO): checkpoint every `cfg.ckpt_every` steps, at the
    last step, and when a Slurm time limit is near (crystalrl.timelimit); then raise TimeLimit.
    `stops` (the time-limit stops so far) grows in place."""
    stopping = done < cfg.steps and stop.requested()
    if store is not None and (done % cfg.ckpt_every == 0 or done == cfg.steps or stopping):
        stops += [stop_record(done)] if stopping else []
        store.save(done, state, dict(step=done, **meta, stops=stops))
    if stopping:
        if store is not None:
            store.close()
        raise TimeLimit(done, str(ckpt_dir))


def run_settings(cfg: PPOConfig) -> dict:
    """The settings that decide whether a checkpoint is this run's (PPO and DPO): all but the
    step count (a run can be extended) and the checkpoint interval. Keys added after runs existed
    (the buffer's, dpo_gamma) count only when switched on, so a run that leaves them off
    resumes the checkpoints it wrote before they existed."""
    off = {"steps", "ckpt_every"} | (set() if cfg.buffer_gamma else set(BUFFER_KEYS))
    off |= set() if cfg.dpo_gamma else {"dpo_gamma"}
    return {k: v for k, v in cfg.to_dict().items() if k not in off}


def _buffer_draws(buffer: Buffer | None, key: jax.Array, n: int, sharding):
    """For update u = 0, 1, ... of a step: a 1-tuple holding the draw of `n` buffer rows with
    fold_in(key, u), placed with `sharding`; () when there is no buffer or it is empty."""
    for u in itertools.count():
        yield () if buffer is None or not buffer.rows else (
            jax.device_put(buffer.draw(jax.random.fold_in(key, u), n), sharding),)


def _with_buffer(state: dict, buffer: Buffer | None) -> dict:
    """What a checkpoint holds: the training state, and the experience buffer when there is one."""
    return state if buffer is None else dict(state, buffer=buffer.arrays())


def _as_state(template: nnx.State, params: dict) -> nnx.State:
    """A copy of the nnx.State `template` holding the plain-dict `params`."""
    state = jax.tree.map(lambda x: x, template)
    nnx.replace_by_pure_dict(state, params)
    return state
