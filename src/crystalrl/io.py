"""Small I/O helpers shared by every stage: atomic writes, thread limits, the allocator, logging."""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import sys
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


_JOB_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")  # torch's MKL included
_BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")  # numpy's


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


def set_threads(n: int) -> None:
    """Give torch and OpenMP `n` threads (Snakemake's {threads}) and numpy's BLAS one.

    Oversubscribed threads made MLIP relaxations 5-6x slower when two jobs shared the
    2 cores (see docs); every script calls this first. BLAS here multiplies 3x3 cells
    and other small matrices (ASE's FIRE and cell filter, pymatgen), where threads only
    cost: `bench/bench_relax.py --backend chgnet --threads 2` relaxed 100 structures one
    by one with ASE in 580.5 s with OpenBLAS on 2 threads and 284.0 s on 1. numpy is loaded before this runs,
    so its BLAS is limited in place (threadpoolctl); the variables reach later loads.
    """
    from threadpoolctl import threadpool_limits

    n = max(1, int(n))
    for var in _JOB_THREAD_VARS:
        os.environ[var] = str(n)
    for var in _BLAS_THREAD_VARS:
        os.environ[var] = "1"
    threadpool_limits(1, user_api="blas")
    if "torch" in sys.modules:
        import torch
        torch.set_num_threads(n)


#: glibc's mallopt parameters (malloc.h) and the values `keep_freed_memory` gives them:
#: blocks up to 32 MiB (glibc's ceiling for this one) come from the heap, not mmap; the heap
#: is never trimmed; it grows 64 MiB at a time.
_MALLOPT = ((-3, 32 << 20), (-1, 2**31 - 1), (-2, 64 << 20))  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for the next allocation instead of returning it to the OS.

    An MLIP's forces and stress come from an autograd pass that allocates and frees tensors
    of megabytes hundreds of times per call. By default glibc maps such blocks afresh or
    trims them off the heap on free, so each allocation faults in new zeroed pages
    (bench/bench_malloc.py: 751,189 page faults in SevenNet's model calls on 64 structures,
    240,313 with this; batched calls 1.30x faster on one thread). The process then keeps its peak
    memory, which the job's memory request must cover anyway. False where the C library
    is not glibc (nothing changes).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all([mallopt(param, value) == 1 for param, value in _MALLOPT])  # a list: apply every one


def get_logger(name: str, logfile: str | os.PathLike | None = None, level: str | None = None) -> logging.Logger:
    """A logger writing each line once to stderr and, if given, once to the rule's `log:` file
    (from `level` up, default INFO). It does not pass lines on to the root logger: a library
    that configures the root (absl, snakemake's own) would print every line a second time in
    its format. Loggers of modules below `name` need no handlers: their lines come here."""
    logger = logging.getLogger(name)
    logger.setLevel(level or logging.INFO)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not any(type(h) is logging.StreamHandler for h in logger.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        logger.addHandler(h)
    if logfile is not None:
        path = os.path.abspath(logfile)
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == path for h in logger.handlers):
            Path(logfile).parent.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(logfile)
            fh.setFormatter(fmt)
            logger.addHandler(fh)
    return logger
