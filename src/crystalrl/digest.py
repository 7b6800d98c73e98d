"""Content digests: what a resumable run starts from, as short stable strings.

A checkpoint is resumed only by the run that wrote it (`train.checkpoint`), and a run
is identified by its settings *and* the content of what it starts from: a path says
nothing once a file is rewritten in place (a retrained base model keeps its folder).
Arrays are hashed by value, so a model saved twice with the same parameters has the
same digest whatever its files' timestamps; files by their bytes.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20


def digest_arrays(tree: Any) -> str:
    """sha256 (first 16 hex digits) of a pytree of arrays: every leaf's path, dtype, shape and bytes."""
    import jax

    h = hashlib.sha256()
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    for path, leaf in leaves:
        a = np.ascontiguousarray(jax.device_get(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def digest_files(*paths: str | os.PathLike) -> str:
    """sha256 (first 16 hex digits) of files and folders (every file below, in sorted order) by content.

    A file inside a folder contributes its path relative to the folder, so renaming it
    changes the digest; moving the folder or a file given directly does not.
    """
    h = hashlib.sha256()
    for top in map(Path, paths):
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for p in files:
            h.update(f"{p.relative_to(top) if top.is_dir() else ''}|".encode())
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(_CHUNK), b""):
                    h.update(block)
    return h.hexdigest()[:16]
