"""Which RL algorithm to use here? PPO, GRPO, DPO... from one base model, two seeds each.

Reads a finished run whose `ppo.runs` hold one run per (method, training seed), named
<method>_s<seed> (`config/compare.yaml` over `config/alexandria.yaml`: ppo_s0, ppo_s1,
grpo_s0, ...; a method is an algorithm with its settings, e.g. dpo_gamma). Each
model `ppo_<run>` draws `--n` fresh samples with the sampling seed of its training seed
(`ppo_runs.<run>.seed`), the base model with every one of those seeds, all with the same
keys per seed (as `bench_effect.py`: same space groups and sampling noise, so a model
and the base model at one seed differ only in the weights). Each batch is scored with the
run's MLIP and hull and judged with the evaluation's own code (`bench_effect.judge`).

KL to the base model is estimated on the same fresh samples, the same for every
method (DPO's own `kl` metric is taken on its pairs, not on its samples):

    KL(p || p_base) ~ mean_{x ~ p} [log p(x) - log p_base(x)]   (nats per crystal)

Prints per (method, seed) and per method (mean over seeds, spread = max - min) the
stable fraction (e_hull < evaluate.stable_threshold), mean e_hull, validity, S.U.N.,
KL, the reward-hacking shares (single-element samples, e_hull < -0.1) and the mean
e_hull of multi-element samples; then each method's gain over the base model against
the base model's seed spread.

    .venv/bin/python bench/bench_algorithms.py \\
        --configfile config/alexandria.yaml config/compare.yaml [--n 512] [--out algorithms.csv]
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_effect import judge, load_run  # noqa: E402  (a sibling script)

from crystalrl.io import write_text_atomic  # noqa: E402
from crystalrl.runtime import set_threads  # noqa: E402

COLUMNS = ["stable_rate", "mean_e_hull", "valid_rate", "sun_rate", "kl_to_base", "single_element_frac",
           "below_hull_frac", "e_hull_multi_mean"]


def variant(run: str) -> str:
    """The method a run tries: its name without the training seed (`dpo_gamma_s1` -> `dpo_gamma`)."""
    return re.sub(r"_s\d+$", "", run)


def draw(model, base, sg_probs, *, n: int, seed: int, temperature: float, top_p: float):
    """n fresh samples of `model` at sampling seed `seed` (the keys of `rl.fresh`): the
    structures and the Monte Carlo KL to `base` on them (nats per crystal)."""
    import jax

    from crystalrl.model.sampler import sample
    from crystalrl.rl.ppo import total_logp
    from crystalrl.spacegroups import draw_spacegroups

    k_g, k_s = jax.random.split(jax.random.key(seed))
    G = draw_spacegroups(k_g, sg_probs, n)
    batch = sample(model, k_s, G, temperature=temperature, top_p=top_p)
    structures, _status = batch.decode()
    logp_base = np.asarray(total_logp(base, batch.tokens()))
    return structures, float(np.mean(batch.logp - logp_base))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=".", help="where snakemake ran (config/ and results/ below it)")
    ap.add_argument("--configfile", nargs="+", default=["config/alexandria.yaml", "config/compare.yaml"])
    ap.add_argument("--n", type=int, default=512, help="fresh samples per model and seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="CSV of the per-(method, seed) table")
    args = ap.parse_args()
    set_threads(args.threads)
    warnings.filterwarnings("ignore")

    from crystalrl.config import ppo_run_config
    from crystalrl.ehull import e_hull_as_generated
    from crystalrl.model.store import load_model

    cwd = os.getcwd()
    cfg, run, sg_probs, mlip, hull, evaluate_cfg, novelty = load_run(Path(args.workdir), args.configfile)
    runs = {name: ppo_run_config(cfg, name) for name in cfg["ppo"]["runs"]}
    base = load_model(run / "models" / "base")[0]
    seeds = sorted({r["seed"] for r in runs.values()})
    todo = [("base", "base", base, s) for s in seeds]
    todo += [(variant(name), name, load_model(run / "models" / f"ppo_{name}")[0], r["seed"]) for name, r in runs.items()]
    print(f"run {cfg['run']}: {len(runs)} RL runs {sorted(runs)} from one base model; {args.n} fresh samples per "
          f"model at its training seed (base: seeds {seeds}); MLIP {mlip!r}; hull {hull!r}; "
          f"stable = e_hull < {evaluate_cfg.stable_threshold} eV/atom")

    t0, draws, kls = time.perf_counter(), [], []
    for method, name, model, seed in todo:
        structures, kl = draw(model, base, sg_probs, n=args.n, seed=seed, temperature=cfg["sample"]["temperature"],
                              top_p=cfg["sample"]["top_p"])
        t = time.perf_counter()
        e_hull, status = e_hull_as_generated(structures, mlip, hull)
        draws.append(dict(model=method, seed=seed, structures=structures, e_hull=e_hull, status=status,
                          score_s=time.perf_counter() - t))
        kls.append(dict(run=name, kl_to_base=kl))
    table = judge(draws, evaluate_cfg, novelty, processes=args.threads)
    table.insert(0, "run", [k["run"] for k in kls])
    table["kl_to_base"] = [k["kl_to_base"] for k in kls]
    table = table.rename(columns={"model": "method"})

    g = table.groupby("method", sort=False)[COLUMNS]
    summary = g.mean().add_suffix("_mean").join((g.max() - g.min()).add_suffix("_spread"))
    summary = summary[[f"{c}_{s}" for c in COLUMNS for s in ("mean", "spread")]]
    pd.set_option("display.width", 250)
    fmt = lambda v: f"{v:.3f}"  # noqa: E731
    print(f"\nper method and seed ({time.perf_counter() - t0:.0f} s):")
    print(table[["method", "run", "seed", "n", "scored", *COLUMNS]].to_string(index=False, float_format=fmt))
    print("\nmean over seeds and seed spread (max - min):")
    print(summary.to_string(float_format=fmt))
    print()
    b = summary.loc["base"]
    for method in summary.index.drop("base"):
        s = summary.loc[method]
        verdict = []
        for col, better, word in (("stable_rate", 1, "stable fraction"), ("mean_e_hull", -1, "mean e_hull"),
                                  ("e_hull_multi_mean", -1, "multi-element mean e_hull")):
            gain = better * (s[f"{col}_mean"] - b[f"{col}_mean"])
            beyond = abs(gain) > max(b[f"{col}_spread"], s[f"{col}_spread"])
            verdict.append(f"{word} {s[f'{col}_mean']:.3f} vs base {b[f'{col}_mean']:.3f} "
                           f"({'better' if gain > 0 else 'worse'}, {'beyond' if beyond else 'within'} seed spread)")
        single = 100 * (s["single_element_frac_mean"] - b["single_element_frac_mean"])
        verdict.append(f"single-element share {single:+.1f} points vs base; KL {s['kl_to_base_mean']:.2f} nats")
        print(f"{method}: " + "; ".join(verdict))
    if args.out:
        out = Path(args.out) if Path(args.out).is_absolute() else Path(cwd) / args.out
        write_text_atomic(table.drop(columns=["score_s"]).to_csv(index=False), out)
        print(f"table written to {out}")


if __name__ == "__main__":
    main()
