"""Atomic writes: an artifact is either complete or absent, and readable by the user's group."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _chmod_like_new(path: Path, directory: bool = False) -> None:
    """Give a temp file (0600) or dir (0700) the mode a plain create would: 0666/0777 minus umask.

    Without this every atomically written artifact stayed private to its owner, unreadable
    to the rest of the user's group on a shared cluster.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside `path`; move it into place only on success.

    A killed job therefore never leaves a half-written artifact that Snakemake
    (or a resumed run) would mistake for a finished one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix=suffix if suffix is not None else path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        _chmod_like_new(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a fresh temporary directory beside `path`; on success it replaces `path`.

    An existing directory is moved aside first (rename cannot overwrite a non-empty
    one) and deleted only after the new one is in place, so at every moment `path`
    is either the old complete directory or the new complete one.
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp"))
    try:
        yield tmp
        _chmod_like_new(tmp, directory=True)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old"))
            os.replace(path, old / "d")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_parquet_atomic(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write `df` to Parquet atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
