"""The process's resources, set once by every stage (`crystalrl.stages.main`): how many
threads torch, OpenMP and BLAS use, and how glibc keeps freed memory."""
from __future__ import annotations

import ctypes
import os
import sys

_JOB_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")  # torch's MKL included
_BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")  # numpy's


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
