"""The paper's effect on a finished run: does PPO make more of its fresh samples stable?

Draws `--n` fresh samples from each model (base, SFT, PPO) with two seeds each, every
model with the same keys per seed (`crystalrl.rl.fresh.fresh_sample_rewards`: same
space groups, same sampling noise, so (base, s) and (ppo, s) differ only in the
weights), scores them with the run's MLIP and hull (`crystalrl.ehull`, as the
`ehull` reward and `evaluate` do) and judges them with the evaluation's own code
(`crystalrl.evaluate.sun.evaluate_samples`: validity, stable = e_hull < threshold,
unique, novel against the run's training split, S.U.N.).

Prints, per model and seed, the stable fraction, unique, novel and S.U.N. rates and
the mean e_hull of the scored samples; per model the mean over seeds and the seed
spread (|seed a - seed b|); and the verdicts: the gain of each fine-tuned model's stable
fraction over the base model against the base model's seed spread, and the reward-hacking
audit (`crystalrl.rl.fresh.hacking_audit`): the single-element share against the base
model's (within 10 points?) and the mean e_hull of multi-element samples. `--out` writes the per-(model, seed) table as CSV for the report.

    .venv/bin/python bench/bench_effect.py --workdir . \\
        --configfile config/alexandria.yaml [--n 1024] [--seeds 0 1] [--out effect.csv]

Not a timed test: it reads a run's models (results/{run}/models/*) and takes minutes
(MLIP energies of every sample, StructureMatcher for uniqueness and novelty).
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from crystalrl.config import validate_config
from crystalrl.io import write_text_atomic
from crystalrl.runtime import set_threads

METRICS = ("valid", "stable", "unique", "novel", "sun")


def load_config(workdir: Path, configfiles: list[str]) -> dict:
    """config/config.yaml overlaid by the --configfile files, merged and validated as snakemake does."""
    from snakemake.utils import update_config

    cfg: dict = {}
    for f in ["config/config.yaml", *configfiles]:
        update_config(cfg, yaml.safe_load((workdir / f).read_text()) or {})
    return validate_config(cfg)


def load_run(workdir: Path, configfiles: list[str]):
    """What scoring fresh samples of a finished run needs, loaded once (the cwd becomes `workdir`,
    where the config's relative paths hold): (config, results/{run}, the training split's space
    group probabilities, MLIP, hull, EvaluateConfig, NoveltyIndex of the training split)."""
    from crystalrl.evaluate.matching import NoveltyIndex
    from crystalrl.evaluate.sun import EvaluateConfig
    from crystalrl.hull import HullConfig, load_hull
    from crystalrl.mlip import MLIPConfig, load_mlip
    from crystalrl.spacegroups import spacegroup_probs
    from crystalrl.train.data import load_token_arrays

    cfg = load_config(workdir, configfiles)
    os.chdir(workdir)  # config paths are relative to where snakemake runs
    run = Path("results") / cfg["run"]
    train_arrays, _ = load_token_arrays(run / "data" / "tokens_train.parquet")
    sg_probs = spacegroup_probs("train", train_arrays["G"])  # the training distribution, as `dist` and PPO
    mlip, hull = load_mlip(MLIPConfig.from_dict(cfg["mlip"])), load_hull(HullConfig.from_dict(cfg["hull"]))
    evaluate_cfg = EvaluateConfig.from_dict(cfg["evaluate"])
    novelty = NoveltyIndex(pd.read_parquet(run / "data" / "train.parquet"), evaluate_cfg.matcher,
                           evaluate_cfg.match_spacegroup)
    return cfg, run, sg_probs, mlip, hull, evaluate_cfg, novelty


def draw_and_score(models: dict, sg_probs, *, n: int, seeds, mlip, hull,
                   temperature: float, top_p: float) -> list[dict]:
    """Fresh samples of every (model, seed), drawn by `fresh_sample_rewards` with the same keys,
    with their structures and e_hull as generated; in (model, seed) order."""
    from crystalrl.ehull import e_hull_as_generated
    from crystalrl.rewards import RewardResult
    from crystalrl.rl.fresh import fresh_sample_rewards

    draws: list[dict] = []

    def score(structures):
        t = time.perf_counter()
        e_hull, status = e_hull_as_generated(structures, mlip, hull)  # the MLIP carries its batch size
        draws.append(dict(structures=list(structures), e_hull=e_hull, status=status,
                          score_s=time.perf_counter() - t))
        return RewardResult(reward=-np.nan_to_num(e_hull, nan=np.inf), valid=np.isfinite(e_hull),
                            extras={"e_hull": e_hull})

    table = fresh_sample_rewards(models, score, sg_probs, n=n, seeds=tuple(seeds),
                                 temperature=temperature, top_p=top_p)
    for d, (_, row) in zip(draws, table.iterrows()):
        d.update(model=row["model"], seed=int(row["seed"]))
    return draws


def judge(draws: list[dict], evaluate_cfg, novelty_index, processes: int) -> pd.DataFrame:
    """Per (model, seed): n, the evaluation's rates, mean e_hull of the scored samples."""
    from crystalrl.evaluate.sun import evaluate_samples
    from crystalrl.rl.fresh import hacking_audit

    rows = []
    for d in draws:
        n = len(d["structures"])
        samples = pd.DataFrame({"sample_id": [f"{d['model']}-s{d['seed']}-{i}" for i in range(n)]})
        ev = evaluate_samples(samples, e_hull=d["e_hull"], config=evaluate_cfg, structures=d["structures"],
                              novelty_index=novelty_index, processes=processes)
        eh = ev["e_hull"].to_numpy()
        row = dict(model=d["model"], seed=d["seed"], n=n, scored=int(np.isfinite(eh).sum()))
        row.update({f"{m}_rate": float(ev[m].mean()) for m in METRICS})
        row["mean_e_hull"] = float(np.nanmean(eh)) if np.isfinite(eh).any() else np.nan
        row["median_e_hull"] = float(np.nanmedian(eh)) if np.isfinite(eh).any() else np.nan
        row.update(hacking_audit(d["structures"], d["e_hull"]))  # single-element share, e_hull < -0.1, multi-element e_hull
        row["score_s"] = d["score_s"]
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame, base: str = "base") -> tuple[pd.DataFrame, list[str]]:
    """Mean and seed spread per model, and the verdict lines (gain in stable fraction vs base spread)."""
    cols = [f"{m}_rate" for m in METRICS] + ["mean_e_hull", "single_element_frac", "below_hull_frac", "e_hull_multi_mean"]
    g = table.groupby("model", sort=False)[cols]
    summary = g.mean().add_suffix("_mean").join((g.max() - g.min()).add_suffix("_spread"))
    lines = []
    if base in summary.index:
        b, spread = summary.loc[base, "stable_rate_mean"], summary.loc[base, "stable_rate_spread"]
        for model in summary.index.drop(base):
            gain = summary.loc[model, "stable_rate_mean"] - b
            paired = (table[table.model == model].set_index("seed")["stable_rate"]
                      - table[table.model == base].set_index("seed")["stable_rate"])
            lines.append(f"{model}: stable fraction {summary.loc[model, 'stable_rate_mean']:.3f} vs base {b:.3f}: "
                         f"gain {gain:+.3f} against the base seed spread {spread:.3f} -> "
                         f"{'EFFECT' if gain > spread else 'no effect beyond seed noise'} "
                         f"(same-seed gains {', '.join(f'{v:+.3f}' for v in paired.dropna())})")
        b_single, b_multi = summary.loc[base, "single_element_frac_mean"], summary.loc[base, "e_hull_multi_mean_mean"]
        multi_spread = summary.loc[base, "e_hull_multi_mean_spread"]
        for model in summary.index.drop(base):
            single, multi = summary.loc[model, "single_element_frac_mean"], summary.loc[model, "e_hull_multi_mean_mean"]
            lines.append(f"{model}: single-element share {single:.3f} vs base {b_single:.3f} "
                         f"({100 * (single - b_single):+.1f} points: "
                         f"{'within' if abs(single - b_single) <= 0.10 else 'BEYOND'} 10 points); "
                         f"mean e_hull of multi-element samples {multi:.3f} vs base {b_multi:.3f} eV/atom "
                         f"({'falls beyond' if b_multi - multi > multi_spread else 'does not fall beyond'} "
                         f"the base seed spread {multi_spread:.3f})")
    return summary, lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=".", help="where snakemake ran (config/ and results/ below it)")
    ap.add_argument("--configfile", nargs="+", default=["config/alexandria.yaml"])
    ap.add_argument("--models", nargs="+", default=None, help="default: evaluate.models of the config")
    ap.add_argument("--n", type=int, default=1024, help="fresh samples per model and seed (256 moves the stable fraction by 0.4 points per crystal)")
    ap.add_argument("--seeds", type=int, nargs=2, default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="CSV of the per-(model, seed) table")
    args = ap.parse_args()
    set_threads(args.threads)
    warnings.filterwarnings("ignore")

    from crystalrl.model.store import load_model

    cwd = os.getcwd()
    cfg, run, sg_probs, mlip, hull, evaluate_cfg, novelty = load_run(Path(args.workdir), args.configfile)
    names = args.models or list(cfg["evaluate"]["models"])
    models = {m: load_model(run / "models" / m)[0] for m in names}
    print(f"run {cfg['run']}: models {names}, {args.n} fresh samples x seeds {args.seeds}; "
          f"MLIP {mlip!r}; hull {hull!r}; stable = e_hull < {evaluate_cfg.stable_threshold} eV/atom")

    t0 = time.perf_counter()
    draws = draw_and_score(models, sg_probs, n=args.n, seeds=args.seeds, mlip=mlip, hull=hull,
                           temperature=cfg["sample"]["temperature"],
                           top_p=cfg["sample"]["top_p"])
    table = judge(draws, evaluate_cfg, novelty, processes=args.threads)
    summary, verdict = summarize(table)
    pd.set_option("display.width", 200)
    print(f"\nper model and seed ({time.perf_counter() - t0:.0f} s):")
    print(table.drop(columns=["score_s"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nmean over seeds and seed spread (max - min):")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    print()
    for line in verdict:
        print(line)
    if args.out:
        out = Path(args.out) if Path(args.out).is_absolute() else Path(cwd) / args.out
        write_text_atomic(table.to_csv(index=False), out)
        print(f"table written to {out}")


if __name__ == "__main__":
    main()
