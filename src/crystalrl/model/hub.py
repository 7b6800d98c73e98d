"""Where published CrystalFormer checkpoints live, and how a config names one.

Kept apart from `published` (which needs JAX and Orbax) so that checking a config, which
every Snakemake call does while it parses the workflow, stays light.
"""
from __future__ import annotations

import urllib.parse
from pathlib import Path

HF_BASE = "https://huggingface.co/zdcao/CrystalFormer/resolve/main"
#: The authors' checkpoints (model/README.md of the public code); all in the paper config.
PUBLISHED = {
    "alex20": f"{HF_BASE}/alex20/PBE/epoch_005500.pkl",
    "alex20_rl_ehull": f"{HF_BASE}/alex20/RL-ehull/epoch_000195.pkl",
    "alex20_rl_dielectric": f"{HF_BASE}/alex20/RL-dielectric/epoch_000100.pkl",
}


def checkpoint_url(source: str, revision: str | None = None) -> str:
    """The URL to download `source` from: a name of PUBLISHED, a URL or a local path.

    A Hugging Face page link (`.../blob/<rev>/...`) becomes its file link (`/resolve/`).
    `revision` (a commit hash or tag of the Hugging Face repo) pins a PUBLISHED name's file;
    without it the file is the repo's `main`, whose commit the inputs lock records.
    """
    if source in PUBLISHED:
        url = PUBLISHED[source]
        return url.replace("/resolve/main/", f"/resolve/{revision}/", 1) if revision else url
    scheme = urllib.parse.urlparse(source).scheme
    if scheme in ("http", "https", "file"):
        u = urllib.parse.urlparse(source)
        if u.netloc.endswith("huggingface.co") and "/blob/" in u.path:
            return u._replace(path=u.path.replace("/blob/", "/resolve/", 1)).geturl()
        return source
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"published checkpoint {source!r}: neither a known name "
                                f"({', '.join(PUBLISHED)}), a URL, nor an existing file")
    return path.resolve().as_uri()
