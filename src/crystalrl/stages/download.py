"""Stage `download_*`: fetch a rule's remote input (data set, hull, dielectric data, checkpoint).

outputs.path: one file (one URL) or a folder (several URLs); params: urls, sha256
({file name: hex}), lock (the inputs lock, `crystalrl.data.lock`, or null). Retries, checksums and atomic renames are `crystalrl.data.download`'s.
"""
from __future__ import annotations

from pathlib import Path

from crystalrl.data.download import download, download_into


def run(inputs, outputs, params, log, threads=1) -> None:
    out, urls, sha = Path(outputs.path), list(params["urls"]), dict(params.get("sha256") or {})
    lock = params.get("lock")
    if len(urls) == 1 and out.suffix:  # one file (hull, dielectric data, a checkpoint)
        log.info("downloading %s -> %s", urls[0], out)
        download(urls[0], out, sha256=sha.get(out.name), lock=lock)
    else:  # several files into a folder (the data source)
        log.info("downloading %d files into %s", len(urls), out)
        download_into(out, urls, sha, lock=lock)
