"""Stage `fetch_mlip_weights`: an MLIP's weights, downloaded once on the submitting host.

Orb, MACE and MatterSim download their weights when a model is first built; on compute
nodes without internet every relax, evaluate and PPO job would fail there. This local
rule fetches them into resources/mlip/ with the workflow's downloader (retries, resumed
transfers, the inputs lock), from `mlip.weights_url` or the backend's own URL for
`mlip.model`; the GPU jobs get the file as `mlip.weights_path` and run offline.

params: mlip (the section as written), lock (the inputs lock or null); outputs: weights.
"""
from __future__ import annotations

from crystalrl.data.download import download
from crystalrl.mlip.backends import backend_class
from crystalrl.mlip.config import MLIPConfig


def run(inputs, outputs, params, log, threads=1) -> None:
    cfg = MLIPConfig.from_dict(params["mlip"])
    url = cfg.weights_url or backend_class(cfg.backend).weights_url(cfg.model)
    log.info("%s %s: weights from %s", cfg.backend, cfg.model or "(default)", url)
    download(url, outputs.weights, lock=params.get("lock"))
