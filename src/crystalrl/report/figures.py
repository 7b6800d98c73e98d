"""The paper's figures from the workflow's Parquet artifacts (matplotlib, PNG).

Each function takes DataFrames and an output path, so tests can call them directly.
"""
from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from crystalrl.io import atomic_path  # noqa: E402

COLORS = {"base": "#4C72B0", "sft": "#55A868", "ppo": "#C44E52"}


def model_color(model: str) -> str:
    return COLORS.get(model, COLORS["ppo"] if model.startswith("ppo") else "#8172B2")


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png")
    plt.close(fig)


def pretrain_curves(metrics: dict[str, pd.DataFrame], path) -> None:
    """Training and validation loss (negative log-likelihood per crystal) versus step."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, df in metrics.items():
        c = model_color(name)
        if "train_loss" in df:
            d = df.dropna(subset=["train_loss"])
            ax.plot(d["step"], d["train_loss"], "--", color=c, label=f"{name} train")
        ax.plot(df["step"], df["val_loss"], "-o", ms=3, color=c, label=f"{name} validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss = -log p(crystal) (nats per crystal)")
    ax.set_title("Pretraining and SFT loss")
    ax.legend()
    _save(fig, path)


def ppo_curves(metrics: dict[str, pd.DataFrame], path) -> None:
    """Paper Fig. 2: expected e_hull (or reward) and KL to the base model versus step, one
    colour per run; a weighted reward's components in a panel of their own. dpo/ipo runs (no samples, no reward: their metrics have `margin`) draw
    their preference margin in a panel of their own, not on the e_hull axis; their KL is on
    their pairs, not on samples."""
    online = {n: df for n, df in metrics.items() if "margin" not in df}
    offline = {n: df for n, df in metrics.items() if "margin" in df}
    # a weighted reward logs each component's batch mean (`reward_<component>_mean`, before weighting)
    parts = {n: [c for c in df.columns if re.fullmatch(r"reward_.+_mean", c)] for n, df in online.items()}
    panels = (["signal"] if online else []) + (["parts"] if any(parts.values()) else []) \
        + (["margin"] if offline else []) + ["kl"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    ax = dict(zip(panels, axes[0]))
    color = {n: model_color(f"ppo_{n}") if len(metrics) == 1 else plt.cm.tab10(i % 10) for i, n in enumerate(metrics)}
    with_e_hull = {n for n, df in online.items() if "e_hull_mean" in df and df["e_hull_mean"].notna().any()}
    for name, df in online.items():
        col, what = ("e_hull_mean", "mean e_hull") if name in with_e_hull else ("reward_mean", "mean reward")
        ax["signal"].plot(df["step"], df[col], "-o", ms=3, color=color[name], label=f"{name}: {what}")
    if online:
        ax["signal"].set_ylabel("mean e_hull of samples (eV/atom)" if with_e_hull == set(online) else
                                "mean reward" if not with_e_hull else "mean e_hull (eV/atom) or mean reward")
        ax["signal"].set_title("Expected reward signal during fine-tuning")
    styles = {}
    for name, cols in parts.items():
        for col in cols:
            ls = styles.setdefault(col, ["-", "--", ":", "-."][len(styles) % 4])
            ax["parts"].plot(online[name]["step"], online[name][col], ls, marker="o", ms=2, color=color[name],
                             label=f"{name}: {col[len('reward_'):-len('_mean')]}")
    if "parts" in ax:
        ax["parts"].set_ylabel("component mean over the batch (before weighting)")
        ax["parts"].set_title("Reward components")
    for name, df in offline.items():
        ax["margin"].plot(df["step"], df["margin"], "-o", ms=3, color=color[name], label=name)
    if offline:
        ax["margin"].set_ylabel("preference margin h = beta * z (mean over the step's pairs)")
        ax["margin"].set_title("DPO / IPO: chosen over rejected")
    for name, df in metrics.items():
        ax["kl"].plot(df["step"], df["kl"], "-o", ms=3, color=color[name], label=name)
    ax["kl"].set_ylabel("KL(policy || base) estimate (nats per crystal)")
    ax["kl"].set_title("Distance from the base model" + (" (dpo/ipo: on their pairs)" if offline else ""))
    for a in ax.values():
        a.set_xlabel("step")
        a.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def ehull_histograms(evals: dict[str, pd.DataFrame], path, *, stable: float = 0.1,
                     title: str = "Energy above hull of samples as generated") -> None:
    """Paper Fig. 3 / 6b: histograms of e_hull per model, with the stability threshold."""
    fig, ax = plt.subplots(figsize=(6, 4))
    finite = [df["e_hull"][np.isfinite(df["e_hull"])] for df in evals.values()]
    allv = np.concatenate([f.to_numpy() for f in finite]) if finite else np.array([0.0])
    hi = float(np.clip(np.nanpercentile(allv, 98) if allv.size else 1.0, 0.3, 5.0))
    bins = np.linspace(min(-0.2, float(np.nanmin(allv)) if allv.size else -0.2), hi, 40)
    for (name, df), e in zip(evals.items(), finite):
        frac = float(np.mean(df["e_hull"] < stable)) if len(df) else 0.0
        ax.hist(np.clip(e, bins[0], bins[-1]), bins=bins, alpha=0.5, color=model_color(name),
                label=f"{name} (n={len(df)}, {100 * frac:.1f}% < {stable} eV/atom)")
    ax.axvline(stable, color="k", ls=":", lw=1)
    ax.set_xlabel("e_hull (eV/atom)")
    ax.set_ylabel("number of samples")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)


def sun_per_spacegroup(table: pd.DataFrame, path) -> None:
    """Paper Fig. 4: stable and S.U.N. fractions per space group for each model."""
    rows = table[table["spacegroup"].astype(str) != "total"].copy()
    rows["spacegroup"] = rows["spacegroup"].astype(int)
    sgs = sorted(rows["spacegroup"].unique())
    models = list(dict.fromkeys(rows["model"]))
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 0.6 * len(sgs) * len(models) / 2), 6), sharex=True)
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(sgs))
    for ax, col, label in zip(axes, ("stable_rate", "sun_rate"), ("stable fraction", "S.U.N. fraction")):
        for i, m in enumerate(models):
            d = rows[rows["model"] == m].set_index("spacegroup").reindex(sgs)
            ax.bar(x + (i - (len(models) - 1) / 2) * width, d[col].fillna(0), width, color=model_color(m), label=m)
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
    axes[0].legend(ncol=len(models))
    axes[0].set_title("Stable and S.U.N. samples per space group")
    axes[1].set_xticks(x, [str(s) for s in sgs])
    axes[1].set_xlabel("space group number")
    fig.tight_layout()
    _save(fig, path)


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of points not dominated in (x, y), both maximised, sorted by x."""
    order = np.argsort(-x)
    front, best_y = [], -np.inf
    for i in order:
        if y[i] > best_y:
            front.append(i)
            best_y = y[i]
    return np.array(front[::-1], dtype=int)


def dielectric_scatter(preds: dict[str, pd.DataFrame], path) -> None:
    """Paper Fig. 6a: band gap versus dielectric constant, with each model's Pareto front."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, df in preds.items():
        d = df[np.isfinite(df["band_gap"]) & np.isfinite(df["eps"])]
        c = model_color(name)
        ax.scatter(d["eps"], d["band_gap"], s=8, alpha=0.4, color=c, label=f"{name} (n={len(d)})")
        if len(d):
            f = pareto_front(d["eps"].to_numpy(), d["band_gap"].to_numpy())
            ax.plot(d["eps"].to_numpy()[f], d["band_gap"].to_numpy()[f], "-", color=c, lw=2)
    ax.set_xscale("log")
    ax.set_xlabel("total dielectric constant (dimensionless)")
    ax.set_ylabel("band gap (eV)")
    ax.set_title("Band gap vs dielectric constant (lines: Pareto fronts)")
    ax.legend()
    _save(fig, path)


def reward_audit(table: pd.DataFrame, path) -> None:
    """The reward-hacking audit (`crystalrl.evaluate.audit`): per model the share of single-element
    samples, of samples below -0.1 eV/atom and of repeated formulas, as grouped bars."""
    cols = [("single_element_frac", "single element"), ("below_hull_frac", "e_hull < -0.1 eV/atom"),
            ("repeated_formula_frac", "repeated formula")]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / max(len(table), 1)
    x = np.arange(len(cols))
    for i, row in enumerate(table.itertuples()):
        values = [100 * getattr(row, c) for c, _ in cols]
        ax.bar(x + i * width, values, width, label=row.model, color=model_color(row.model))
    ax.set_xticks(x + width * (len(table) - 1) / 2, [label for _, label in cols])
    ax.set_ylabel("% of decoded (or scored) samples")
    ax.set_title("Reward-hacking audit (samples of the training distribution of space groups)")
    ax.legend(fontsize=8)
    _save(fig, path)
