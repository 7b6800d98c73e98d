"""Paper-scale rehearsal: what every stage of the CrystalFormer-RL run costs on this machine.

The paper's model config (Table S1, 4,833,575 parameters, random weights) and its
batch sizes: 1000 samples per PPO step, 3 PPO epochs, pretraining batches of 1000
per device (8000 over 8 A100s). Each stage runs for a few units, timed after its
compilation (compile seconds are printed apart), in CPU seconds of this process
(robust to the other jobs sharing the cores; wall seconds are printed too):

  pretrain  train step (Adam, dropout 0.1) on real Alexandria tokens      per sample
  sample    KV-cached sampler, one PPO batch                               per sample
  reward    e_hull reward: CHGNet energies (batched) + MP2020 + hull        per structure
  ppo       PPO update: old + reference logp, 3 full-batch gradient steps  per sample
  relax     FIRE + cell filter with CHGNet, fmax 0.1, <= 500 steps          per structure
  evaluate  validity + uniqueness + novelty against a 100k reference        per structure

Structures for reward / relax / evaluate are real Alexandria structures with <= 20
sites (../shared/data/alexandria_sample), the size range of Alex-20: a random-weight
model's samples are mostly invalid and would price the MLIP wrongly. The sampler's
cost depends on the weights through one number: a chunk's loop runs until its longest
row stops; the measurement is rescaled to the longest row a chunk of real Alexandria
crystals has (their tokens: ../shared/reference), by the ratio of loop lengths. Batches that do not fit
this machine's memory (training at 1000 rows holds ~35 GB of activations) are
measured smaller and scaled per sample; the printout says where.

Baselines in the same run, the public code's recipe where the project has one:
sampler (full forward per token in float64, bench_sample.py), MLIP (one ASE
calculator call per structure, bench_mlip.py), hull (scan the reference + one
PhaseDiagram per structure, bench_hull.py). Then the paper's run is projected in
CPU core-hours per stage (our code and the public recipe), and in GPU-hours only
from the paper's own figures (Appendix A and Sec. 3.2; no GPU was measured).

    nice -n 10 .venv/bin/python bench/rehearse_paper.py            # ~17 min at load 8 on 2 cores
    nice -n 10 .venv/bin/python bench/rehearse_paper.py --quick    # smoke test, small counts
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from crystalrl.runtime import set_threads

set_threads(1)  # before torch / BLAS / XLA load: one core, so CPU seconds are core-seconds
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from flax import nnx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CRYSTALRL_SHARED", REPO.parent / "shared"))
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests")]

# The paper's run (arXiv 2504.02367); where a number comes from.
PAPER = dict(
    train_rows=0.8 * 1.3e6,   # App. B: "more than 1.3 million", 80 % for training
    epochs=5500,              # App. A
    global_batch=8000, devices=8,  # App. A: "total batch size of 8000 over eight A100 GPUs"
    pretrain_gpu_h=1000,      # App. A: "approximately 1000 GPU hours"
    ppo_batch=1000, ppo_epochs=3,  # App. A ("total batch size of 1000"), Table S1
    ppo_steps={"ehull": 200, "dielectric": 100},  # App. A "100 - 200 steps"; released epochs 195 / 100
    ppo_gpu_h=(12, 24),       # App. A, per RL run, two A100s
    sft_samples=10_000, sft_epochs=55,  # App. A
    stable_frac=0.447,        # Sec. 3.1: 44.7 % of base-model samples stable (SFT set size)
    a100_samples_per_s=5000 / 276,  # Sec. 3.2: 5000 samples in 276 s on one A100 (public sampler)
    eval_samples=1000 + 14 * 1000,  # Fig. 3 (1000) + Fig. 4 (14 space groups x 1000) per model
    eval_models=4,            # config/config.yaml evaluate.models: base, sft, ppo_ehull, ppo_dielectric
)
TOKENS = ("G", "L", "XYZ", "A", "W")
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


# ---------------------------------------------------------------------- timing
@dataclass
class Timing:
    wall: float = 0.0
    cpu: float = 0.0
    compile: float = 0.0  # seconds JAX spent tracing, lowering and compiling inside


@contextlib.contextmanager
def timed():
    """Wall and process-CPU seconds of the block, and the JAX compile seconds inside it."""
    t = Timing()

    def listen(event, duration, **_):
        if event in COMPILE_EVENTS:
            t.compile += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        yield t
    finally:
        t.wall, t.cpu = time.perf_counter() - w0, time.process_time() - c0
        jax.monitoring.unregister_event_duration_listener(listen)


@dataclass
class Cost:
    stage: str
    unit: str
    n: float  # units timed
    t: Timing
    baseline_cpu_per_unit: float | None = None  # the public recipe, same unit
    note: str = ""
    scale: float = 1.0  # applied to the measurement (sampler: to Alex-20 sequence lengths)

    @property
    def per_unit(self) -> float:
        """CPU seconds per unit, compile excluded."""
        return self.scale * max(self.t.cpu - self.t.compile, 0.0) / self.n

    @property
    def wall_per_unit(self) -> float:
        return self.scale * max(self.t.wall - self.t.compile, 0.0) / self.n


def say(msg: str) -> None:
    print(msg, flush=True)


def block(tree):
    return jax.block_until_ready(tree)


# ---------------------------------------------------------------------- stages
def paper_cfg(**kw):
    from crystalrl.model.config import ModelConfig
    return ModelConfig.from_dict(kw)


def stage_pretrain(batch: int, steps: int) -> Cost:
    """The project's full train step (train.loop._make_steps) on the paper config."""
    from crystalrl.train.data import DataOrder, clean_arrays, take
    from crystalrl.train.loop import fresh_train_step

    cfg = paper_cfg()  # dropout 0.1 as in pretraining
    z = np.load(SHARED / "reference" / "crystalformer_logp_alex.npz")
    arrays, _ = clean_arrays({k: z[k] for k in TOKENS}, n_max=cfg.n_max, atom_types=cfg.atom_types,
                             wyck_types=cfg.wyck_types)
    order = DataOrder(len(arrays["G"]), batch, 0)
    fs = fresh_train_step(cfg)
    state, rest, train_step, data_sh = fs.state, fs.rest, fs.train_step, fs.data_sh

    def step(i):
        nonlocal state
        state, out = train_step(state, rest, jax.device_put(take(arrays, order.indices(i)), data_sh), np.int32(i))
        return out["loss"]

    with timed() as warm:
        block(step(0))
    with timed() as t:
        for i in range(1, steps + 1):
            out = step(i)
        block(out)
    say(f"  pretrain: batch {batch}, {steps} step(s) after a compiling one ({warm.compile:.0f} s compile)")
    return Cost("pretrain step", "sample", batch * steps, t,
                note=f"measured at batch {batch}, scaled per sample")


def training_spacegroups(n: int, seed: int) -> np.ndarray:
    """n space groups drawn from the Alexandria sample's histogram (the training distribution)."""
    from crystalrl.spacegroups import draw_spacegroups, spacegroup_probs
    idx = pd.read_csv(SHARED / "data" / "alexandria_sample" / "index.csv")
    probs = spacegroup_probs("train", idx["spg_symprec0p01"].to_numpy())
    return np.asarray(draw_spacegroups(jax.random.key(seed), probs, n))


def stage_sample(model, n: int, baseline_batch: int) -> tuple[Cost, dict]:
    """Our sampler on n rows after a first call that compiles; the public recipe on a few rows."""
    from bench_sample import _baseline

    from crystalrl.model import sampler as sp
    G = training_spacegroups(n, 0)
    chunk = min(n, sp.chunk_rows(model.cfg))
    with timed() as warm:  # compiles the chunk program (the sampler's own split printed beside)
        first = sp.sample(model, jax.random.key(0), G[:chunk])
    with timed() as t:
        out = sp.sample(model, jax.random.key(1), G)
    sites = (np.asarray(out.W) > 0).sum(1)
    chunk_max = np.mean([sites[i:i + chunk].max() for i in range(0, n, chunk)])
    # A chunk's loop runs until its longest row stops: rescale to the longest row a chunk of
    # real (Alexandria) crystals would have, by the ratio of loop lengths (5 tokens per site + pad).
    real = (np.load(SHARED / "reference" / "crystalformer_logp_alex.npz")["A"] > 0).sum(1)
    real_max = np.mean([np.random.default_rng(i).choice(real, chunk).max() for i in range(200)])
    scale = (real_max + 1) / (chunk_max + 1)
    say(f"  sample: first call ({chunk} rows) wall {warm.wall:.1f} s, of which compile {warm.compile:.1f} s "
        f"(the sampler's own split: {first.seconds:.1f} s sampling + {first.compile_seconds:.1f} s compile); "
        f"then {n} rows in chunks of {chunk}: wall {t.wall:.1f} s ({out.seconds:.1f} s by the sampler, "
        f"compile {out.compile_seconds:.1f} s); random weights: mean {sites.mean():.1f} sites, longest per "
        f"chunk {chunk_max:.1f}; Alexandria tokens: mean {real.mean():.1f}, longest per chunk {real_max:.1f} "
        f"-> cost x {scale:.2f}")
    with jax.enable_x64(True):
        graphdef, state = nnx.split(model)
        state = jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                             state)
        g = jnp.asarray(G[:baseline_batch])
        with timed() as tw:
            block(_baseline(graphdef, state, jax.random.key(2), g))
        with timed() as tb:
            block(_baseline(graphdef, state, jax.random.key(3), g))
    base = tb.cpu / baseline_batch
    say(f"  sample baseline (public recipe): {baseline_batch} rows, wall {tb.wall:.1f} s "
        f"(first call {tw.wall:.1f} s, of which compile {tw.compile:.1f} s)")
    return Cost("sample", "sample", n, t, base, scale=scale,
                note=f"x {scale:.2f}: random-weight lengths to Alexandria's"), out


def stage_ppo(model, out, batch: int) -> Cost:
    """One PPO step's model work on `batch` rows: old + reference logp, ppo_epochs updates."""
    from crystalrl.model.store import params_of
    from crystalrl.rl.ppo import _logp_fn, _make_update
    from crystalrl.train.loop import data_mesh, make_optimizer

    graphdef, params0, rest = nnx.split(model, nnx.Param, ...)
    tx, _ = make_optimizer(1e-5, 0.0, 1.0)
    update = _make_update(graphdef, rest, tx, 0.1, 0.2, data_mesh(jax.devices()[:1]))
    logp = _logp_fn(graphdef, rest, data_mesh(jax.devices()[:1]))
    ref = params_of(model)
    state = dict(params=nnx.to_pure_dict(params0))
    state["opt_state"] = tx.init(state["params"])
    tokens = out.tokens()
    rows = np.resize(np.arange(len(tokens["G"])), batch)
    b = {k: jnp.asarray(np.asarray(tokens[k])[rows]) for k in TOKENS}
    adv = jnp.asarray(np.random.default_rng(0).normal(size=batch), jnp.float32)
    with timed() as warm:
        old = logp(state["params"], b)
        block(update(state, b, old, old, adv))
    with timed() as t:
        old = logp(state["params"], b)
        ref_lp = logp(ref, b)
        for _ in range(PAPER["ppo_epochs"]):
            state, aux = update(state, b, old, ref_lp, adv)
        block(aux)
    say(f"  ppo: batch {batch}, old+ref logp and {PAPER['ppo_epochs']} updates ({warm.compile:.0f} s compile)")
    return Cost("ppo update", "sample", batch, t, note=f"measured at batch {batch}, scaled per sample")


def load_structures(n: int, seed: int):
    from test_mlip import load_alexandria
    return load_alexandria(SHARED / "data", n, max_sites=20, seed=seed)


def stage_reward(structures, n_base: int) -> list[Cost]:
    """The e_hull reward end to end, and its MLIP and hull parts against the public recipe."""
    from bench_hull import crystalformer_recipe, fresh_copy
    from test_mlip import ase_energies

    from crystalrl.hull import HullReference, load_reference, needs_mp2020
    from crystalrl.mlip import MLIPConfig, load_mlip
    from crystalrl.rewards import ehull_reward

    data = SHARED / "data"
    hull = load_reference(data / "mp20" / "mp20_formation_energies.csv.gz",
                          elemental_entries=data / "mp_entries" / "mp_elemental_reference_entries.json.gz")
    mlip = load_mlip(MLIPConfig.from_dict(dict(backend="chgnet")))
    reward = ehull_reward(mlip, hull, clip=10.0)
    reward(structures[:2])  # model load and first-call work
    hull._pd_cache.clear()
    with timed() as t_all:
        rr = reward(structures)
    ok = [s for s, e in zip(structures, rr.extras["e_hull"]) if np.isfinite(e)]
    say(f"  reward: {len(structures)} structures, {len(ok)} with an e_hull "
        f"(others hold elements outside the hull reference: {hull!r})")

    with timed() as t_mlip:
        energies = mlip.predict(ok, batch_size=64, properties=("energy",))["energy"]
    calc = mlip.calculator()
    ase_energies(calc, ok[:1])
    with timed() as t_ase:
        ase_energies(calc, ok[:n_base])
    entries, _ = hull._entries_from_pair(ok, energies, apply_mp2020=needs_mp2020(mlip))
    fresh = HullReference(fresh_copy([e for v in hull.by_chemsys.values() for e in v]), hull.energy_kind)
    with timed() as t_hull:
        fresh.e_above_hull(entries)
    all_entries = fresh_copy([e for v in hull.by_chemsys.values() for e in v])
    with timed() as t_recipe:
        for e in entries[:n_base]:
            crystalformer_recipe(all_entries, e)
    n_ok = len(ok)
    return [
        Cost("reward (end to end)", "structure", len(structures), t_all,
             note="CHGNet batched + MP2020 + hull, cold PD cache"),
        Cost("  of which MLIP energies", "structure", n_ok, t_mlip,
             baseline_cpu_per_unit=(t_ase.cpu - t_ase.compile) / n_base,
             note=f"baseline: ASE calculator per structure on {n_base}"),
        Cost("  of which hull placement", "structure", n_ok, t_hull,
             baseline_cpu_per_unit=t_recipe.cpu / n_base,
             note=f"baseline: scan {len(all_entries)} entries + PD per structure on {n_base}"),
    ]


def perturbed(structures, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for s in structures:
        s = s.copy()
        s.perturb(0.1)
        s.apply_strain(rng.uniform(-0.03, 0.03, 3))
        out.append(s)
    return out


def stage_relax(structures, max_steps: int, n_base: int) -> Cost:
    """The relax stage's method for CHGNet (batched when it can), and ASE FIRE one structure
    at a time (the public mlff_relax.py recipe) on the first n_base as the baseline."""
    from crystalrl.mlip import MLIPConfig, load_mlip
    from crystalrl.relax.config import RelaxConfig
    from crystalrl.relax.run import choose_method, relax_structures
    mlip = load_mlip(MLIPConfig.from_dict(dict(backend="chgnet")))
    cfg = RelaxConfig.from_dict(dict(fmax=0.1, max_steps=max_steps))
    todo = perturbed(structures, 1)
    with timed() as t:
        df = relax_structures(mlip, todo, cfg)
    method = choose_method(mlip, cfg)
    say(f"  relax ({method}): {len(structures)} perturbed structures, mean {df['steps'].mean():.0f} FIRE steps, "
        f"{int(df['converged'].sum())} converged, statuses {df['status'].str[:12].value_counts().to_dict()}")
    base = None
    if method != "ase" and n_base:
        with timed() as tb:
            db = relax_structures(mlip, todo[:n_base], RelaxConfig.from_dict(dict(fmax=0.1, max_steps=max_steps,
                                                                               method="ase")))
        base = tb.cpu / n_base
        say(f"  relax baseline (ASE FIRE per structure): {n_base} structures, mean {db['steps'].mean():.0f} steps")
    return Cost("relax", "structure", len(structures), t, base,
                note=f"{method}; perturbed (0.1 A, 3 % strain), mean {df['steps'].mean():.0f} steps")


def stage_evaluate(n_samples: int, n_ref: int) -> tuple[Cost, Timing, int]:
    """evaluate_samples (validity, uniqueness, novelty) against a reference of n_ref rows."""
    from bench_novelty import build_reference, build_samples

    from crystalrl.evaluate.matching import NoveltyIndex
    from crystalrl.evaluate.sun import EvaluateConfig, evaluate_samples
    cfg = EvaluateConfig.from_dict({})  # the schema's defaults: what a run evaluates with
    rng = np.random.default_rng(0)
    ref = build_reference(n_ref, rng)
    samples, _ = build_samples(ref, n_samples, rng)
    with timed() as t_index:
        index = NoveltyIndex(ref, cfg.matcher, cfg.match_spacegroup)
    df = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n_samples)]})
    with timed() as t:
        ev = evaluate_samples(df, e_hull=np.zeros(n_samples), config=cfg, structures=samples,
                              novelty_index=index)
    say(f"  evaluate: {n_samples} samples (40 % perturbed reference copies) against {len(ref)} reference "
        f"rows ({index.n_groups} composition groups, index {t_index.wall:.1f} s); valid "
        f"{ev['valid'].mean():.2f}, unique {ev['unique'].mean():.2f}, novel {ev['novel'].mean():.2f}")
    return Cost("evaluate", "structure", n_samples, t, note=f"novelty vs {len(ref)} rows"), t_index, len(ref)


# ---------------------------------------------------------------------- report
def fmt_h(seconds: float) -> str:
    return f"{seconds / 3600:10.1f}"


def report(costs: dict[str, Cost], rew: list[Cost], n_ref: int, index_t: Timing) -> None:
    s, r, u = costs["sample"], rew[0], costs["ppo"]
    B = PAPER["ppo_batch"]
    step = {"sample": s.per_unit * B, "reward": r.per_unit * B, "ppo update": u.per_unit * B}
    total = sum(step.values())
    mlip, hullp = rew[1], rew[2]
    rest = max(r.per_unit - mlip.per_unit - hullp.per_unit, 0.0)  # validity, MP2020 entries
    base_reward = mlip.baseline_cpu_per_unit + hullp.baseline_cpu_per_unit + rest
    base_step = {"sample": s.baseline_cpu_per_unit * B, "reward": base_reward * B, "ppo update": step["ppo update"]}
    base_total = sum(base_step.values())

    say("\n== seconds per unit (CPU seconds of one core, compile excluded; wall in brackets) ==")
    say(f"{'stage':28s} {'unit':10s} {'ours s/unit':>12s} {'wall':>9s} {'public s/unit':>14s} {'ratio':>8s}  note")
    for c in [costs["pretrain"], s, *rew, u, costs["relax"], costs["evaluate"]]:
        b = c.baseline_cpu_per_unit
        ratio = f"{b / c.per_unit:7.1f}x" if b else "       -"
        say(f"{c.stage:28s} {c.unit:10s} {c.per_unit:12.4f} {f'[{c.wall_per_unit:.4f}]':>9s} "
            f"{(f'{b:.4f}' if b else '-'):>14s} {ratio}  {c.note}")
    say("(ratio = public recipe / ours, same unit, same run; 'public' = the public code's recipe: "
        "sampler without KV cache in float64, ASE call per structure, PD per structure)")

    say(f"\n== one PPO step: {B} samples, {PAPER['ppo_epochs']} PPO epochs (CPU seconds) ==")
    say(f"{'part':12s} {'ours s':>10s} {'share':>7s} {'public s':>10s} {'share':>7s}")
    for k in step:
        say(f"{k:12s} {step[k]:10.1f} {step[k] / total:7.1%} {base_step[k]:10.1f} {base_step[k] / base_total:7.1%}")
    say(f"{'total':12s} {total:10.1f} {'':7s} {base_total:10.1f}   public / ours = {base_total / total:.1f}x")
    dom = max(step, key=step.get)
    say(f"dominates a PPO step here: {dom} ({step[dom] / total:.0%}); in the public recipe: "
        f"{max(base_step, key=base_step.get)} ({max(base_step.values()) / base_total:.0%})")
    other = {"pretrain step (batch 1000/device)": costs["pretrain"].per_unit * 1000,
             f"relax {B} structures": costs["relax"].per_unit * B,
             f"evaluate {B} structures": costs["evaluate"].per_unit * B}
    for k, v in other.items():
        say(f"  for scale: {k}: {v:.0f} s = {v / total:.2f} PPO steps")

    # ------------------------------------------------------------- the paper's run
    n_pre = PAPER["epochs"] * PAPER["train_rows"]
    n_sft_train = PAPER["sft_epochs"] * PAPER["sft_samples"] * PAPER["stable_frac"]
    n_eval = PAPER["eval_models"] * PAPER["eval_samples"]
    ref_scale = PAPER["train_rows"] / n_ref
    scored = r.per_unit  # e_hull of a sample, as in the PPO reward
    rows = [
        ("pretrain", f"{PAPER['epochs']} epochs x {PAPER['train_rows']:.3g} rows",
         n_pre * costs["pretrain"].per_unit, n_pre * costs["pretrain"].per_unit),
        (f"PPO e_hull ({PAPER['ppo_steps']['ehull']} steps)", "sample + reward + update",
         PAPER["ppo_steps"]["ehull"] * total, PAPER["ppo_steps"]["ehull"] * base_total),
        (f"PPO dielectric ({PAPER['ppo_steps']['dielectric']} steps)", "sample + update; FoM reward not priced",
         PAPER["ppo_steps"]["dielectric"] * (step["sample"] + step["ppo update"]),
         PAPER["ppo_steps"]["dielectric"] * (base_step["sample"] + base_step["ppo update"])),
        ("SFT data", f"sample + relax {PAPER['sft_samples']}",
         PAPER["sft_samples"] * (s.per_unit + costs["relax"].per_unit),
         PAPER["sft_samples"] * (s.baseline_cpu_per_unit
                                 + (costs["relax"].baseline_cpu_per_unit or costs["relax"].per_unit))),
        ("SFT training", f"{PAPER['sft_epochs']} epochs x {PAPER['stable_frac']:.1%} of {PAPER['sft_samples']}",
         n_sft_train * costs["pretrain"].per_unit, n_sft_train * costs["pretrain"].per_unit),
        ("evaluate: sample", f"{PAPER['eval_models']} models x {PAPER['eval_samples']}",
         n_eval * s.per_unit, n_eval * s.baseline_cpu_per_unit),
        ("evaluate: e_hull", "MLIP + hull per sample", n_eval * scored, n_eval * base_reward),
        ("evaluate: S.U.N. matching", f"novelty vs {PAPER['train_rows']:.3g} rows (x{ref_scale:.1f})",
         n_eval * costs["evaluate"].per_unit * ref_scale, None),
    ]
    say("\n== the paper's run on this CPU (core-hours, our code vs the public recipe) ==")
    say(f"{'stage':34s} {'what':42s} {'ours h':>10s} {'public h':>10s}")
    for name, what, ours, pub in rows:
        say(f"{name:34s} {what:42s} {fmt_h(ours)} {fmt_h(pub) if pub is not None else '         -'}")
    t_ours = sum(x[2] for x in rows)
    say(f"{'total':34s} {'':42s} {fmt_h(t_ours)}   (pretraining {rows[0][2] / t_ours:.1%} of it)")
    say("scaling assumptions: cost per sample is flat in batch size (batches measured smaller than the "
        "paper's where noted); novelty cost grows linearly with the reference (each sample is matched "
        f"against its composition group, {n_ref} rows measured; index build {index_t.wall:.0f} s); "
        "the e_hull of evaluation samples costs what the PPO reward costs per structure")

    a100 = PAPER["a100_samples_per_s"]
    ppo_gpu_s_per_step = PAPER["ppo_gpu_h"][0] * 3600 / 100  # 12 GPU-h / 100 steps = 24 GPU-h / 200 steps
    say("\n== GPU-hours of the paper's run, from the paper's figures only (public code, A100; no GPU here) ==")
    say(f"pretrain: {PAPER['pretrain_gpu_h']} GPU-h (App. A), i.e. "
        f"{PAPER['pretrain_gpu_h'] * 3600 / n_pre * 1e3:.2f} GPU-ms per training sample, "
        f"{PAPER['pretrain_gpu_h'] * 3600 / (n_pre / PAPER['global_batch']) / PAPER['devices']:.2f} s per "
        f"step of {PAPER['global_batch'] // PAPER['devices']} rows per A100")
    say(f"PPO: {PAPER['ppo_gpu_h'][0]}-{PAPER['ppo_gpu_h'][1]} GPU-h per run of 100-200 steps (App. A) = "
        f"{ppo_gpu_s_per_step:.0f} GPU-s per step; runs of {PAPER['ppo_steps']['ehull']} + "
        f"{PAPER['ppo_steps']['dielectric']} steps: "
        f"{ppo_gpu_s_per_step * sum(PAPER['ppo_steps'].values()) / 3600:.0f} GPU-h")
    samp_s = B / a100
    say(f"  of a PPO step, sampling 1000 at {a100:.1f} samples/s per A100 (Sec. 3.2: 5000 in 276 s) = "
        f"{samp_s:.0f} GPU-s ({samp_s / ppo_gpu_s_per_step:.0%}); the other "
        f"{ppo_gpu_s_per_step - samp_s:.0f} GPU-s are reward (Orb, one ASE call per structure, hull on CPU "
        "workers), PPO update and validation, not split by the paper")
    say(f"sampling for evaluation ({n_eval} samples) and SFT ({PAPER['sft_samples']}): "
        f"{(n_eval + PAPER['sft_samples']) / a100 / 3600:.1f} GPU-h")
    gpu_total = PAPER["pretrain_gpu_h"] + ppo_gpu_s_per_step * sum(PAPER["ppo_steps"].values()) / 3600 + \
        (n_eval + PAPER["sft_samples"]) / a100 / 3600
    say(f"total ~{gpu_total:.0f} GPU-h, {PAPER['pretrain_gpu_h'] / gpu_total:.0%} of it pretraining; "
        "starting from the published base model (issue 10) leaves "
        f"~{gpu_total - PAPER['pretrain_gpu_h']:.0f} GPU-h. MLIP relaxations, hull and S.U.N. matching "
        "run on CPUs (core-hours above). Our code's GPU figures: bench/gpu_check.sh on one GPU.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: a few units per stage")
    ap.add_argument("--pretrain-batch", type=int, default=100, help="rows per train step here (paper: 1000/device)")
    ap.add_argument("--pretrain-steps", type=int, default=2)
    ap.add_argument("--samples", type=int, default=1000, help="rows sampled (paper: 1000 per PPO step)")
    ap.add_argument("--baseline-batch", type=int, default=2, help="rows for the public sampler recipe")
    ap.add_argument("--ppo-batch", type=int, default=100, help="rows of the PPO update here (paper: 1000)")
    ap.add_argument("--structures", type=int, default=200, help="structures for the reward")
    ap.add_argument("--baseline-structures", type=int, default=40)
    ap.add_argument("--relax", type=int, default=6, help="structures relaxed")
    ap.add_argument("--relax-steps", type=int, default=500)
    ap.add_argument("--relax-baseline", type=int, default=3, help="structures relaxed by ASE FIRE one by one")
    ap.add_argument("--eval-samples", type=int, default=200)
    ap.add_argument("--reference", type=int, default=100_000, help="novelty reference rows")
    args = ap.parse_args()
    if args.quick:
        args.pretrain_batch, args.pretrain_steps, args.samples, args.baseline_batch = 8, 1, 16, 1
        args.ppo_batch, args.structures, args.baseline_structures = 8, 12, 4
        args.relax, args.relax_steps, args.relax_baseline = 2, 30, 1
        args.eval_samples, args.reference = 20, 5000
    warnings.filterwarnings("ignore")
    import torch
    t_start = time.perf_counter()
    say(f"rehearse_paper{' --quick' if args.quick else ''}: {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; 1 thread; jax {jax.__version__} "
        f"[{jax.devices()[0].platform}], torch {torch.__version__}")

    from crystalrl.model.store import build_model
    from crystalrl.model.transformer import count_params
    model = build_model(paper_cfg(dropout_rate=0.0, attn_dropout=0.0))  # fine-tuning: no dropout
    say(f"model: paper config, {count_params(model):,} parameters (random weights)")
    costs: dict[str, Cost] = {}
    costs["pretrain"] = stage_pretrain(args.pretrain_batch, args.pretrain_steps)
    costs["sample"], out = stage_sample(model, args.samples, args.baseline_batch)
    costs["ppo"] = stage_ppo(model, out, args.ppo_batch)
    structures = load_structures(max(args.structures, args.relax), seed=0)
    rew = stage_reward(structures[:args.structures], args.baseline_structures)
    costs["relax"] = stage_relax(structures[:args.relax], args.relax_steps, args.relax_baseline)
    costs["evaluate"], index_t, n_ref = stage_evaluate(args.eval_samples, args.reference)
    report(costs, rew, n_ref, index_t)
    say(f"\nrehearsal wall time {time.perf_counter() - t_start:.0f} s; load average now "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
