"""Stage `fetch_checkpoint`: a published checkpoint (a name, or a URL) -> a local pickle.

params: source, sha256 (optional; pins the file); outputs: path. The download retries,
checks the sha256 when given, and logs the sha256 of what arrived.
"""
from __future__ import annotations

from crystalrl.model.published import fetch_checkpoint


def run(inputs, outputs, params, log, threads=1) -> None:
    path, sha = fetch_checkpoint(params["source"], outputs.path, sha256=params["sha256"],
                                 revision=params.get("revision"), lock=params.get("lock"))
    log.info("%s -> %s (sha256 %s)", params["source"], path, sha)
