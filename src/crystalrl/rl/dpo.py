"""DPO and IPO: offline preference optimisation of CrystalFormer (`ppo.algorithm: dpo | ipo`),
as the public CrystalFormer's `reinforce/dpo.py` (`make_dpo_loss`, `train`).

For a pair (c chosen, r rejected), with p the policy and p_ref the frozen start model,

    z = (log p(c) - log p_ref(c)) - (log p(r) - log p_ref(r)),    h = beta * z,
    DPO: l = -(1 - eps) log sigma(h) - eps log sigma(-h)   (eps = label_smoothing; 0: the original DPO)
    IPO: l = (z - 1 / (2 beta))^2                          (Azar et al. 2023, Eq. 17)
    loss = mean_pairs(l) - gamma * mean_pairs(log p(c))     (gamma = dpo_gamma; 0: DPO alone)

exactly as the public code (its `logits` is z; beta multiplies it inside the sigmoids, and
IPO's target log-ratio margin is 1 / (2 beta); its gamma term, a likelihood bonus on the
chosen crystals, keeps DPO from lowering both likelihoods at once). h is the margin of DPO's implicit reward
beta * log(p / p_ref) between the chosen and the rejected crystal. log p is the model's own
sequence likelihood (`crystalrl.rl.ppo.total_logp`, dropout off).

No reward and no sampling: each step takes `batch_size` pairs (epochs of a permutation
drawn from (seed, epoch)), so, as in PPO, a run resumed from its Orbax checkpoint logs the
same metrics as one that never stopped. Pairs come from the DAG's relaxed pool
(`pairs_from_pool`) or a user table of CIFs (`pairs_from_table`).
"""
from __future__ import annotations

import logging
import time
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from crystalrl.digest import digest_arrays
from crystalrl.model.store import abstract_like, params_of
from crystalrl.rl.ppo import PPOConfig, _as_state, _logp_fn, run_settings, save_or_stop, total_logp
from crystalrl.timelimit import StopRequest, stops_text
from crystalrl.tokenizer import TOKEN_KEYS, tokens_to_arrays
from crystalrl.train.checkpoint import CheckpointStore
from crystalrl.train.loop import data_mesh, make_optimizer

_LOG = logging.getLogger("crystalrl.dpo")
OFFLINE = ("dpo", "ipo")


def preference_loss(logp_c_B, logp_r_B, ref_c_B, ref_r_B, beta: float, label_smoothing: float = 0.0,
                    ipo: bool = False):
    """(per-pair loss (B,), h (B,)) of the module docstring."""
    z_B = (logp_c_B - ref_c_B) - (logp_r_B - ref_r_B)
    h_B = beta * z_B
    if ipo:
        return (z_B - 1 / (2 * beta)) ** 2, h_B
    eps = label_smoothing
    return -(1 - eps) * jax.nn.log_sigmoid(h_B) - eps * jax.nn.log_sigmoid(-h_B), h_B


# ----------------------------------------------------------------------------- pairs
def pairs_from_pool(samples: pd.DataFrame, relaxed: pd.DataFrame, *, min_gap: float,
                    chosen_max: float | None = None) -> tuple[dict, dict, pd.DataFrame]:
    """Preference pairs among a model's own samples, ranked by relaxed e_hull (`e_hull_final`).

    Within each space group the samples relaxed `ok` with a finite e_hull are sorted by it, and
    the i-th lowest is paired with the i-th highest; a pair is kept when the rejected one lies at
    least `min_gap` eV/atom higher (and the chosen one below `chosen_max`, when set). The tokens
    are the samples as generated (what the model's likelihood scores). Returns (chosen arrays,
    rejected arrays, a table of the pairs' ids and e_hull).
    """
    ok = relaxed.loc[relaxed["status"].eq("ok") & np.isfinite(relaxed["e_hull_final"].astype(float)),
                     ["sample_id", "e_hull_final"]]
    df = samples.merge(ok, on="sample_id").sort_values(["G", "e_hull_final", "sample_id"], kind="stable")
    c_rows, r_rows = [], []
    for _, grp in df.groupby("G", sort=True):
        e = grp["e_hull_final"].to_numpy(float)
        for i in range(len(grp) // 2):
            j = len(grp) - 1 - i
            if e[j] - e[i] >= min_gap and (chosen_max is None or e[i] < chosen_max):
                c_rows.append(grp.index[i])
                r_rows.append(grp.index[j])
    if not c_rows:
        raise ValueError(f"config key 'ppo.pairs': no preference pair in the pool of {len(df)} relaxed samples "
                         f"(pairs need a rejected e_hull ppo.pair_min_gap {min_gap} above the chosen one, chosen "
                         f"below ppo.pair_chosen_max {chosen_max}, in one space group)")
    chosen, rejected = df.loc[c_rows], df.loc[r_rows]
    table = pd.DataFrame({"chosen_id": chosen["sample_id"].to_numpy(), "rejected_id": rejected["sample_id"].to_numpy(),
                          "G": chosen["G"].to_numpy(), "chosen_e_hull": chosen["e_hull_final"].to_numpy(),
                          "rejected_e_hull": rejected["e_hull_final"].to_numpy()})
    return tokens_to_arrays(chosen), tokens_to_arrays(rejected), table


def pairs_from_table(path, *, n_max: int, symprec: float = 0.01, tol: float = 0.01,
                     processes: int = 1) -> tuple[dict, dict, pd.DataFrame]:
    """Pairs of a user table (Parquet, or CSV) with columns chosen_cif, rejected_cif, tokenized as
    the training data (`crystalrl.tokenizer`); a pair with a side that does not tokenize is dropped."""
    from crystalrl.tokenizer import tokenize_many

    df = pd.read_csv(path) if str(path).endswith(".csv") else pd.read_parquet(path)
    missing = {"chosen_cif", "rejected_cif"} - set(df.columns)
    if missing:
        raise KeyError(f"config key 'ppo.pairs': {path} lacks column(s) {sorted(missing)}")
    ids = [str(i) for i in range(len(df))]
    sides = [tokenize_many(df[f"{s}_cif"].tolist(), ids, n_max=n_max, symprec=symprec, tol=tol,
                           processes=processes, progress=False)[0].set_index("id") for s in ("chosen", "rejected")]
    keep = [i for i in ids if i in sides[0].index and i in sides[1].index]
    if not keep:
        raise ValueError(f"config key 'ppo.pairs': no row of {path} has both CIFs tokenizable ({len(df)} rows)")
    table = pd.DataFrame({"row": [int(i) for i in keep]})
    return tokens_to_arrays(sides[0].loc[keep]), tokens_to_arrays(sides[1].loc[keep]), table


# ----------------------------------------------------------------------------- the loop
def _make_update(graphdef, rest, tx, cfg: PPOConfig, mesh):
    """One jitted DPO/IPO step on a batch of pairs; metrics of the parameters before the step."""
    repl, data_sh = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    def objective(params, chosen, rejected, ref_c_B, ref_r_B):
        model = nnx.merge(graphdef, params, rest, copy=True)
        logp_c_B, logp_r_B = total_logp(model, chosen), total_logp(model, rejected)
        loss_B, h_B = preference_loss(logp_c_B, logp_r_B, ref_c_B, ref_r_B, cfg.dpo_beta, cfg.label_smoothing,
                                      ipo=cfg.algorithm == "ipo")
        log_ratio = jnp.concatenate([logp_c_B - ref_c_B, logp_r_B - ref_r_B])
        loss = jnp.mean(loss_B)
        if cfg.dpo_gamma:  # 0: the exact program of DPO alone
            loss = loss - cfg.dpo_gamma * jnp.mean(logp_c_B)
        return loss, dict(margin=jnp.mean(h_B), accuracy=jnp.mean((h_B > 0).astype(jnp.float32)),
                                      kl=jnp.mean(log_ratio), chosen_logp=jnp.mean(logp_c_B),
                                      rejected_logp=jnp.mean(logp_r_B))

    @partial(jax.jit, in_shardings=(repl, data_sh, data_sh, data_sh, data_sh), out_shardings=(repl, repl))
    def update(state, chosen, rejected, ref_c_B, ref_r_B):
        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state["params"], chosen, rejected,
                                                                          ref_c_B, ref_r_B)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return dict(params=optax.apply_updates(state["params"], updates), opt_state=opt_state), \
            dict(loss=loss, grad_norm=optax.global_norm(grads), **aux)

    return update


def batch_rows(seed: int, step: int, batch: int, n: int) -> np.ndarray:
    """Rows of step `step`: positions [step * batch, (step + 1) * batch) of the concatenated
    permutations of 0..n-1, epoch e's drawn from (seed, e)."""
    rows, start = [], step * batch
    while len(rows) < batch:
        epoch, off = divmod(start, n)
        take = np.random.default_rng([seed, epoch]).permutation(n)[off:off + batch - len(rows)]
        rows.extend(take.tolist())
        start += len(take)
    return np.asarray(rows)


def score(logp: Callable, params, arrays: dict, batch: int) -> np.ndarray:
    """log p of every row of `arrays` (N,), in batches of `batch` rows (the last one padded by wrapping)."""
    n = len(arrays["G"])
    out = []
    for s in range(0, n, batch):
        idx = np.resize(np.arange(s, min(s + batch, n)), batch)
        out.append(np.asarray(logp(params, {k: np.asarray(arrays[k])[idx] for k in TOKEN_KEYS}))[:min(batch, n - s)])
    return np.concatenate(out)


def run_dpo(policy, reference, chosen: dict, rejected: dict, cfg: PPOConfig, *, ckpt_dir: str | None = None,
            run_key: dict | None = None, on_metrics: Callable[[pd.DataFrame], None] | None = None,
            log: logging.Logger | None = None, stop_after: int | None = None):
    """Fine-tune `policy` with DPO or IPO (`cfg.algorithm`) on the pairs (`chosen`, `rejected`: token
    arrays, row i a pair); returns (policy, metrics DataFrame, one row per step).

    `reference` is the frozen start model p_ref. Metrics per step, of the batch before its update:
    loss, margin (mean h), accuracy (share of h > 0), kl (mean log p - log p_ref over the batch's
    crystals: the policy's drift on the pairs, not a KL of its samples), chosen_logp, rejected_logp,
    grad_norm, and reward_mean = margin (the curve the report draws). Checkpoints, resumption,
    time limits and `stop_after` as in `crystalrl.rl.ppo.run_ppo`.
    """
    log = log or _LOG
    if cfg.algorithm not in OFFLINE:
        raise ValueError(f"config key 'ppo.algorithm': {cfg.algorithm!r} is not one of {OFFLINE}")
    n = len(chosen["G"])
    if n == 0 or len(rejected["G"]) != n:
        raise ValueError(f"config key 'ppo.pairs': {n} chosen and {len(rejected['G'])} rejected crystals; "
                         "a DPO run needs at least one pair")
    mesh = data_mesh(jax.local_devices())
    n_dev = mesh.devices.size
    batch = max(n_dev, min(cfg.batch_size, n) // n_dev * n_dev)  # a multiple of the device count
    repl, data_sh = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    graphdef, params0, rest = nnx.split(policy, nnx.Param, ...)
    rest = jax.device_put(rest, repl)
    ref_params = jax.device_put(params_of(reference), repl)
    tx, _ = make_optimizer(cfg.lr, 0.0, cfg.clip_grad)
    update = _make_update(graphdef, rest, tx, cfg, mesh)
    logp = _logp_fn(graphdef, rest, mesh)
    ref_c_N, ref_r_N = score(logp, ref_params, chosen, batch), score(logp, ref_params, rejected, batch)
    state = dict(params=nnx.to_pure_dict(params0), opt_state=None)
    state["opt_state"] = tx.init(state["params"])
    state = jax.device_put(state, repl)
    history, start, stops = [], 0, []
    run_id = dict(cfg=run_settings(cfg),
                  start_params=digest_arrays(state["params"]), reference_params=digest_arrays(ref_params),
                  pairs=digest_arrays([chosen, rejected]), inputs=run_key or {})
    store = CheckpointStore(ckpt_dir, log=log) if ckpt_dir else None
    if store is not None:
        resumed = store.resume(abstract_like(state, repl), run_id, max_step=cfg.steps)
        if resumed is not None:
            start, state, meta = resumed
            history, stops = meta["history"], meta.get("stops", [])
            log.info("resumed %s from %s at step %d", cfg.algorithm.upper(), ckpt_dir, start)
            if stops:
                log.info("this run stopped for Slurm time limits %d time(s) so far: %s", len(stops), stops_text(stops))

    with StopRequest(log) as stop:
        for step in range(start, cfg.steps):
            t0 = time.time()
            rows = batch_rows(cfg.seed, step, batch, n)
            c, r = ({k: np.asarray(side[k])[rows] for k in TOKEN_KEYS} for side in (chosen, rejected))
            state, aux = update(state, *jax.device_put((c, r, ref_c_N[rows].astype(np.float32),
                                                        ref_r_N[rows].astype(np.float32)), data_sh))
            row = dict(step=step + 1, **{k: float(v) for k, v in aux.items()})
            row.update(reward_mean=row["margin"], time_step_s=time.time() - t0)
            history.append(row)
            done = step + 1
            log.info("%s step %d/%d  loss %.4f  margin %.4f  accuracy %.3f  kl %.4f  %.1fs", cfg.algorithm, done,
                     cfg.steps, row["loss"], row["margin"], row["accuracy"], row["kl"], row["time_step_s"])
            if not all(np.isfinite(row[k]) for k in ("loss", "grad_norm", "kl")):
                raise FloatingPointError(
                    f"{cfg.algorithm.upper()} diverged at step {done}: loss {row['loss']}, grad norm "
                    f"{row['grad_norm']}, kl {row['kl']}. The newest checkpoint before this step is kept; "
                    "lower ppo.lr and rerun.")
            if on_metrics is not None:
                on_metrics(pd.DataFrame(history))
            save_or_stop(done, cfg, stop, store, state, dict(history=history, run=run_id), stops, ckpt_dir)
            if stop_after is not None and done >= stop_after:
                break
    if store is not None:
        store.close()
    nnx.update(policy, _as_state(params0, state["params"]))
    return policy, pd.DataFrame(history)
