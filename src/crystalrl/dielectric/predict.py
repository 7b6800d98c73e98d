"""Batched dielectric FoM = band gap x dielectric constant for generated structures.

Both models are matgl model directories (`matgl.load_model(dir)`): the tensor model
returns 6 Voigt components per structure (-> 3x3 -> eigenvalues -> mean of real parts,
as in the paper's reward code); the band-gap model is MEGNet, called with the PBE
fidelity. Structures that can't be converted or give non-finite outputs come back as
NaN with a status string; the reward layer maps NaN to its dummy value.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from crystalrl.dielectric.data import eps_from_voigt
from crystalrl.dielectric.graphs import convert_many, forward_batch, resolve_device

META_FILE = "crystalrl.json"


def load_model_dir(path: str | Path):
    """`matgl.load_model` on a local directory, failing at once (never a hub lookup) if absent."""
    import matgl

    path = Path(path)
    missing = [n for n in ("model.json", "model.pt", "state.pt") if not (path / n).exists()]
    if missing:
        raise FileNotFoundError(f"{path}: not a matgl model directory (missing {missing})")
    model = matgl.load_model(path)
    model.eval()
    return model


def read_meta(path: str | Path) -> dict:
    p = Path(path) / META_FILE
    return json.loads(p.read_text()) if p.exists() else {}


def _predict_outputs(model, graphs, batch_size: int, device) -> tuple[np.ndarray, list[str]]:
    """(n, k) outputs for graphs (None -> NaN); a failing batch is retried one by one."""
    n = len(graphs)
    status = ["ok"] * n
    ok_idx = [i for i, g in enumerate(graphs) if g is not None]
    results: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for start in range(0, len(ok_idx), batch_size):
            idx = ok_idx[start:start + batch_size]
            try:
                res = forward_batch(model, [graphs[i] for i in idx], device).cpu().numpy()
                results.update(zip(idx, res))
            except Exception:  # isolate the structure that breaks the batch
                for i in idx:
                    try:
                        results[i] = forward_batch(model, [graphs[i]], device).cpu().numpy()[0]
                    except Exception as exc:
                        status[i] = f"model failed: {exc}"
    k = next(iter(results.values())).shape[-1] if results else 1
    out = np.full((n, k), np.nan)
    for i, r in results.items():
        out[i] = r
    return out, status


class DielectricPredictor:
    """Dielectric constant, band gap and FoM for batches of structures.

    `target` defaults to what the tensor model was trained on (its `crystalrl.json`).
    `clip_band_gap` maps negative predicted gaps (metals) to 0 so FoM is never negative.
    `device`: "cpu", "cuda" or "auto".
    """

    def __init__(self, eps_model_dir: str | Path, gap_model_dir: str | Path, clip_band_gap: bool = True,
                 device: str = "cpu"):
        self.device = resolve_device(device)
        self.eps_model = load_model_dir(eps_model_dir).to(self.device)
        self.gap_model = load_model_dir(gap_model_dir).to(self.device)
        self.target = read_meta(eps_model_dir).get("target", "total")
        self.clip_band_gap = clip_band_gap

    def predict(self, structures, batch_size: int = 64) -> dict[str, np.ndarray]:
        """`structures`: pymatgen Structures, ase Atoms, CIF strings or None.

        Returns `eps`, `band_gap`, `fom` (float arrays, NaN where invalid) and `status`
        (array of str, "ok" or the reason for NaN).
        """
        structures = list(structures)
        n = len(structures)
        eps_g, st_e = convert_many(structures, tuple(self.eps_model.element_types), float(self.eps_model.cutoff))
        gap_g, st_g = convert_many(structures, tuple(self.gap_model.element_types), float(self.gap_model.cutoff))
        voigt_n6, st_e2 = _predict_outputs(self.eps_model, eps_g, batch_size, self.device)
        gap_n1, st_g2 = _predict_outputs(self.gap_model, gap_g, batch_size, self.device)
        if voigt_n6.shape[1] != 6:
            raise ValueError(f"the dielectric model returns {voigt_n6.shape[1]} values per structure, expected 6")
        eps = np.full(n, np.nan)
        good = np.isfinite(voigt_n6).all(axis=1)
        eps[good] = eps_from_voigt(voigt_n6[good])
        band_gap = gap_n1[:, 0]
        if self.clip_band_gap:
            band_gap = np.where(np.isfinite(band_gap), np.clip(band_gap, 0.0, None), band_gap)
        fom = band_gap * eps
        status = []
        for i in range(n):
            reasons = [s for s in (st_e[i], st_e2[i]) if s != "ok"]
            reasons += [f"band gap: {s}" for s in (st_g[i], st_g2[i]) if s not in ("ok", *reasons)]
            if not reasons and not np.isfinite(fom[i]):
                reasons.append("non-finite prediction")
            status.append("; ".join(dict.fromkeys(reasons)) or "ok")
        return {"eps": eps, "band_gap": band_gap, "fom": fom, "status": np.array(status, dtype=object)}
