"""The inputs lock: the bytes every fetched file had when it was first fetched.

Hugging Face's `resolve/main` URLs, figshare links and the Alexandria server can change
a file under a finished run. So the first download of a URL records its sha256, size,
the revision the server says it served (Hugging Face's X-Repo-Commit, else the ETag)
and the date in a YAML file (`inputs_lock`, default `config/inputs.lock`, meant to be
committed beside the config). Every later download of that URL, in this work dir or
another, and every file already present, is checked against it: a mismatch stops with
both hashes. A file lock serialises concurrent writers (several download rules run at once).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

import yaml


class LockMismatch(RuntimeError):
    """A fetched file's bytes differ from what the inputs lock recorded for its URL."""


@contextlib.contextmanager
def _locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path.with_name(lock_path.name + ".flock"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def read_lock(lock_path: str | os.PathLike) -> dict:
    p = Path(lock_path)
    return (yaml.safe_load(p.read_text()) or {}) if p.exists() else {}


def pin(lock_path: str | os.PathLike, url: str, path: str | os.PathLike, sha256: str, *,
        revision: str | None = None, log=None) -> dict:
    """Check `path` (with `sha256`, fetched from `url`) against the lock, or record it there.

    Returns the lock's entry; raises LockMismatch naming the file, the URL and both hashes.
    """
    from crystalrl.io import write_text_atomic

    lock_path = Path(lock_path)
    with _locked(lock_path):
        entries = read_lock(lock_path)
        old = entries.get(url)
        if old is not None:
            if old["sha256"] != sha256:
                raise LockMismatch(
                    f"{path}: sha256 {sha256}, but {lock_path} pins {old['sha256']} for {url} (fetched "
                    f"{old.get('fetched')}, revision {old.get('revision')}): the file changed upstream or "
                    "in place. Nothing of this run used it. To accept the new file on purpose, delete its "
                    f"entry from {lock_path}; to keep the old one, pin a revision in the URL.")
            return old
        entry = dict(sha256=sha256, size=Path(path).stat().st_size, revision=revision,
                     fetched=time.strftime("%Y-%m-%dT%H:%M:%S"))
        entries[url] = entry
        write_text_atomic(yaml.safe_dump(entries, sort_keys=True), lock_path)
    if log is not None:
        log.info("recorded %s (sha256 %s, revision %s) in %s", url, sha256, revision, lock_path)
    return entry
