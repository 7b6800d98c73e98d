"""Train the dielectric-tensor M3GNet and the band-gap MEGNet (paper Appendix D).

`train_dielectric(cfg, data_path, out_dir, ...)` is the workflow stage: it loads and
cleans the DFPT set, trains (or loads) both models, evaluates them on the held-out
test split against constant baselines, and writes two matgl model directories
(each with a `crystalrl.json` holding config and metrics) and a metrics JSON.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from crystalrl.config import section
from crystalrl.dielectric.data import VOIGT_ORDER, eps_from_voigt, load_dielectric_dataset
from crystalrl.dielectric.fit import fit, predict_graphs
from crystalrl.dielectric.graphs import convert_many, resolve_device
from crystalrl.dielectric.predict import load_model_dir
from crystalrl.io import atomic_dir

META_FILE = "crystalrl.json"

WORKFLOW_ONLY_KEYS = ("enabled", "data", "url", "sha256")  # read by the rules, not here


def merged_config(cfg: dict | None) -> dict:
    """The `dielectric` config section with the schema's defaults, as the trainer reads it.

    `band_gap_pretrained` (a path or null) is the flat spelling of
    `band_gap.pretrained_path`, and `extra` (a dict) is merged last, key by key. Unknown
    keys raise, so a typo never silently falls back to a default.
    """
    def merge(base: dict, over: dict, where: str) -> dict:
        out = dict(base)
        for k, v in (over or {}).items():
            if k not in base:
                raise KeyError(f"dielectric config: unknown key `{where}{k}` (known: {sorted(base)})")
            both_dicts = isinstance(base[k], dict) and isinstance(v, dict)
            out[k] = merge(base[k], v, f"{where}{k}.") if both_dicts and k != "model" else v
            if both_dicts and k == "model":  # model knobs: any matgl constructor argument
                out[k] = {**base[k], **v}
        return out

    full = section("dielectric", cfg)
    extra, pretrained = full.pop("extra"), full.pop("band_gap_pretrained")
    out = merge({k: v for k, v in full.items() if k not in WORKFLOW_ONLY_KEYS}, extra, "")
    if pretrained is not None:
        out["band_gap"] = {**out["band_gap"], "pretrained_path": pretrained}
    return out


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_model_dir(model, path: str | Path, meta: dict) -> None:
    """Write a matgl model directory atomically with a `crystalrl.json`."""
    with atomic_dir(path) as tmp:
        model.save(tmp, metadata={"crystalrl": meta.get("kind", "")})
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=float))


def _copy_model_dir(src: Path, dst: Path, meta: dict) -> None:
    with atomic_dir(dst) as tmp:
        for name in ("model.json", "model.pt", "state.pt"):
            shutil.copy2(src / name, tmp / name)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=float))


def _mae(a, b) -> float:
    return float(np.mean(np.abs(np.asarray(a) - np.asarray(b))))


def _baselines(y_train: np.ndarray, y_test: np.ndarray) -> dict:
    return {"test_mae_mean_baseline": _mae(np.mean(y_train), y_test),
            "test_mae_median_baseline": _mae(np.median(y_train), y_test)}


def train_eps_model(ds, graphs, cfg: dict, log: logging.Logger, ckpt_dir: Path | None, data_key: str = ""):
    """M3GNet with 6 outputs (Voigt components); returns (model, metrics)."""
    from matgl.config import DEFAULT_ELEMENTS
    from matgl.models import M3GNet

    tr, va, te = (ds.indices(s) for s in ("train", "val", "test"))
    torch.manual_seed(int(cfg["seed"]))
    model = M3GNet(element_types=DEFAULT_ELEMENTS, ntargets=6, is_intensive=True,
                   readout_type="weighted_atom", **cfg["model"])
    y = ds.voigt_n6
    # One scale for all components (an off-diagonal's own std is ~0.1 and would swamp
    # the loss); the diagonal components share the mean of the diagonal, off-diagonals 0.
    diag_mean = float(y[tr, :3].mean())
    mean_k = np.array([diag_mean] * 3 + [0.0] * 3)
    scale = float(y[tr, :3].std())
    pick = lambda idx: ([graphs[i] for i in idx], y[idx])  # noqa: E731
    res = fit(model, pick(tr), pick(va), epochs=int(cfg["epochs"]), batch_size=int(cfg["batch_size"]),
              lr=float(cfg["lr"]), seed=int(cfg["seed"]), mean_k=mean_k, scale=scale,
              val_metric=lambda p, t: _mae(eps_from_voigt(p), eps_from_voigt(t)),
              max_seconds=None if cfg.get("max_minutes") is None else 60 * float(cfg["max_minutes"]),
              ckpt_path=None if ckpt_dir is None else ckpt_dir / "eps.pt",
              ckpt_key=_key([{k: v for k, v in cfg.items() if k != "band_gap"}, "eps", ds.ids, data_key]),
              log=log, device=resolve_device(cfg["device"]))
    pred_te = predict_graphs(model, [graphs[i] for i in te], int(cfg["batch_size"]))
    eps_te = eps_from_voigt(pred_te)
    metrics = {
        "target": ds.target, "test_mae": _mae(eps_te, ds.eps_n[te]), "val_mae": res.best_val,
        **_baselines(ds.eps_n[tr], ds.eps_n[te]),
        "test_mae_components": dict(zip(VOIGT_ORDER, np.abs(pred_te - y[te]).mean(0).tolist())),
        "best_epoch": res.best_epoch + 1, "epochs_run": res.epochs_run,
        "resumed_from_epoch": res.resumed_from_epoch, "train_seconds": round(res.seconds, 1),
        "n_params": int(sum(p.numel() for p in model.parameters())), "history": res.history,
    }
    return model, metrics


def _gap_split(ds, graphs):
    ok = np.isfinite(ds.band_gap_n)
    return [np.array([i for i in ds.indices(s) if ok[i]]) for s in ("train", "val", "test")]


def train_gap_model(ds, graphs, cfg: dict, seed: int, log: logging.Logger, ckpt_dir: Path | None,
                    device: str = "cpu", data_key: str = ""):
    """MEGNet (multi-fidelity layout, fidelity 0 = PBE) on the DFPT set's band gaps."""
    from matgl.config import DEFAULT_ELEMENTS
    from matgl.models import MEGNet

    tr, va, te = _gap_split(ds, graphs)
    torch.manual_seed(seed)
    model = MEGNet(element_types=DEFAULT_ELEMENTS, include_state=True, **cfg["model"])
    y = ds.band_gap_n.reshape(-1, 1)
    pick = lambda idx: ([graphs[i] for i in idx], y[idx])  # noqa: E731
    res = fit(model, pick(tr), pick(va), epochs=int(cfg["epochs"]), batch_size=int(cfg["batch_size"]),
              lr=float(cfg["lr"]), seed=seed, mean_k=np.array([y[tr].mean()]), scale=float(y[tr].std()),
              val_metric=_mae,
              max_seconds=None if cfg.get("max_minutes") is None else 60 * float(cfg["max_minutes"]),
              ckpt_path=None if ckpt_dir is None else ckpt_dir / "gap.pt",
              ckpt_key=_key([cfg, seed, "gap", ds.ids, data_key]), log=log, device=resolve_device(device))
    metrics = {"source": "trained on the DFPT set's PBE band gaps", "val_mae": res.best_val,
               "best_epoch": res.best_epoch + 1, "epochs_run": res.epochs_run,
               "resumed_from_epoch": res.resumed_from_epoch, "train_seconds": round(res.seconds, 1),
               "n_params": int(sum(p.numel() for p in model.parameters())), "history": res.history}
    return model, metrics


def evaluate_gap(model, ds, graphs, batch_size: int) -> dict:
    tr, _, te = _gap_split(ds, graphs)
    pred = np.clip(predict_graphs(model, [graphs[i] for i in te], batch_size)[:, 0], 0.0, None)
    return {"test_mae": _mae(pred, ds.band_gap_n[te]), **_baselines(ds.band_gap_n[tr], ds.band_gap_n[te])}


def train_dielectric(cfg: dict | None, data_path: str | Path, out_dir: str | Path, threads: int = 1,
                     log: logging.Logger | None = None, *, eps_model_dir: str | Path | None = None,
                     gap_model_dir: str | Path | None = None, metrics_path: str | Path | None = None,
                     ckpt_dir: str | Path | None = None) -> dict:
    """Train (or load) both models and write them plus a metrics JSON; return the metrics.

    Outputs default to `out_dir/eps_model`, `out_dir/gap_model`, `out_dir/metrics.json`.
    Resumable per-epoch checkpoints go to `ckpt_dir` (default `out_dir/.dielectric_ckpt`,
    deliberately not a declared output, so Snakemake keeps it when a job is killed);
    it is removed once every output is written.
    """
    from crystalrl.digest import digest_files
    from crystalrl.io import write_text_atomic
    from crystalrl.logs import get_logger
    from crystalrl.runtime import set_threads

    set_threads(threads)
    log = log or get_logger("crystalrl.dielectric")
    cfg = merged_config(cfg)
    out_dir = Path(out_dir)
    eps_dir = Path(eps_model_dir or out_dir / "eps_model")
    gap_dir = Path(gap_model_dir or out_dir / "gap_model")
    metrics_path = Path(metrics_path or out_dir / "metrics.json")
    ckpt = Path(ckpt_dir or out_dir / ".dielectric_ckpt")
    ckpt.mkdir(parents=True, exist_ok=True)

    ds = load_dielectric_dataset(data_path, target=cfg["target"],
                                 component_range=tuple(cfg["component_range"]), seed=int(cfg["seed"]))
    log.info("%s: %d clean rows, %d rejected; split %s", data_path, len(ds), len(ds.rejected),
             {s: int((ds.split_n == s).sum()) for s in ("train", "val", "test")})
    for reason in ds.rejected["reason"]:
        log.info("rejected: %s", reason)

    mcfg = cfg["model"]
    graphs, status = convert_many(ds.structures, _elements(), float(mcfg["cutoff"]))
    ds, graphs = _drop_failed(ds, graphs, status, log)
    data_key = digest_files(data_path)  # a killed run resumes only on the same data, not just the same ids
    eps_model, eps_metrics = train_eps_model(ds, graphs, cfg, log, ckpt, data_key)
    log.info("eps (%s) test MAE %.3f vs mean baseline %.3f (median %.3f)", cfg["target"],
             eps_metrics["test_mae"], eps_metrics["test_mae_mean_baseline"],
             eps_metrics["test_mae_median_baseline"])

    gcfg = cfg["band_gap"]
    pretrained = gcfg.get("pretrained_path")
    gap_graphs_cutoff = float(gcfg["model"].get("cutoff", 4.0))
    use_pretrained = bool(pretrained) and Path(pretrained, "model.json").exists()
    if use_pretrained:
        gap_model = load_model_dir(pretrained)
        gap_metrics = {"source": f"pretrained {pretrained}"}
        gap_graphs_cutoff = float(gap_model.cutoff)
    else:
        if pretrained:
            log.warning("band_gap.pretrained_path %s has no model.json; training a band-gap model instead",
                        pretrained)
        gap_model = None
    gap_graphs, status = convert_many(ds.structures, _elements(), gap_graphs_cutoff)
    bad = {i: s for i, s in enumerate(status) if s != "ok"}
    if bad:  # the gap model sees fewer rows: mark them as gaps unknown, keep the eps rows
        log.warning("%d structures unusable for the band-gap model: %s", len(bad), list(bad.values())[:3])
        ds.band_gap_n[list(bad)] = np.nan
    if gap_model is None:
        gap_model, gap_metrics = train_gap_model(ds, gap_graphs, gcfg, int(cfg["seed"]), log, ckpt,
                                                 cfg["device"], data_key)
    gap_metrics.update(evaluate_gap(gap_model, ds, gap_graphs, int(gcfg["batch_size"])))
    log.info("band gap test MAE %.3f eV vs mean baseline %.3f (median %.3f)", gap_metrics["test_mae"],
             gap_metrics["test_mae_mean_baseline"], gap_metrics["test_mae_median_baseline"])

    metrics = {
        "data": {"path": str(data_path), "n_clean": len(ds), "n_rejected": int(len(ds.rejected)),
                 "split": {s: int((ds.split_n == s).sum()) for s in ("train", "val", "test")},
                 "rejected": ds.rejected.to_dict(orient="records")},
        "eps": eps_metrics, "band_gap": gap_metrics, "config": cfg,
    }
    short = lambda m: {k: v for k, v in m.items() if k != "history"}  # noqa: E731
    save_model_dir(eps_model, eps_dir, {"kind": "dielectric_tensor", "target": cfg["target"],
                                        "outputs": list(VOIGT_ORDER), "config": cfg,
                                        "metrics": short(eps_metrics)})
    gap_meta = {"kind": "band_gap", "state": "fidelity 0 (PBE)", "config": gcfg, "metrics": short(gap_metrics)}
    if use_pretrained:
        _copy_model_dir(Path(pretrained), gap_dir, gap_meta)
    else:
        save_model_dir(gap_model, gap_dir, gap_meta)
    write_text_atomic(json.dumps(metrics, indent=2, default=float), metrics_path)
    shutil.rmtree(ckpt, ignore_errors=True)
    return metrics


def _elements() -> tuple[str, ...]:
    from matgl.config import DEFAULT_ELEMENTS
    return tuple(DEFAULT_ELEMENTS)


def _drop_failed(ds, graphs, status, log):
    """Rows whose structure can't become a graph leave the data set, with their reason."""
    bad = {i: f"{ds.ids[i]}: {s}" for i, s in enumerate(status) if s != "ok"}
    for reason in bad.values():
        log.warning("rejected: %s", reason)
    if not bad:
        return ds, graphs
    return ds.drop(bad, stage="dielectric_graph"), [g for i, g in enumerate(graphs) if i not in bad]
