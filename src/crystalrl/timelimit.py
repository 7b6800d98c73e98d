"""Through Slurm time limits, unattended: checkpoint on the warning signal, requeue, resume.

1000 GPU-hours of pretraining do not fit in one Slurm job. The long GPU rules ask Slurm
for SIGTERM some minutes before their time limit (`--signal=TERM@<s>`, rule resources).
`StopRequest` catches it, and the SIGTERM Slurm sends at the limit itself; the training
loops look at it after every step, save a checkpoint there and raise `TimeLimit`.
`stages.main` then requeues the Slurm job (`scontrol requeue`): it keeps its job id and
goes back to the queue, so Snakemake's Slurm executor keeps waiting for it, and when it
starts again the stage resumes from that checkpoint. Only a stop that saved progress is
requeued: a job that cannot finish one checkpoint interval within its time limit fails
with a message saying so, instead of looping.

Several processes of one job (`crystalrl.distributed`) stop at the same step: each
step they agree whether any of them was signalled.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping

#: Exit status of a worker process stopped at a time limit (EX_TEMPFAIL).
EXIT_TIME_LIMIT = 75

_LOG = logging.getLogger("crystalrl.timelimit")


class TimeLimit(Exception):
    """A stage stopped at a Slurm time limit after saving a checkpoint at `step` (in `where`)."""

    def __init__(self, step: int, where: str):
        self.step, self.where = step, where
        super().__init__(f"stopped for the time limit after step {step}, checkpoint in {where}")


class StopRequest:
    """Set when the process gets SIGTERM or SIGUSR1; `requested()` asks every process of the job.

    Use as a context manager around a training loop: the previous handlers come back after it.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, log: logging.Logger | None = None):
        self.log = log or _LOG
        self.signalled: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signalled is None:
            self.log.warning("got %s: saving a checkpoint after this step, then stopping",
                             signal.Signals(signum).name)
        self.signalled = signum

    def __enter__(self) -> StopRequest:
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)

    def requested(self) -> bool:
        """Whether this process or any other of the job was signalled (the same answer in all)."""
        import jax

        mine = self.signalled is not None
        if jax.process_count() == 1:
            return mine
        import numpy as np
        from jax.experimental import multihost_utils

        return bool(np.asarray(multihost_utils.process_allgather(np.int32(mine))).max())


def checkpoint_step(ckpt_dir: str | os.PathLike | None) -> int:
    """The newest checkpoint step in `ckpt_dir` (-1 when none): progress is measured by it."""
    from pathlib import Path

    folder = Path(ckpt_dir) if ckpt_dir else None
    if folder is None or not folder.is_dir():
        return -1
    return max((int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), default=-1)


def requeue(progress: bool, env: Mapping[str, str] = os.environ, log: logging.Logger | None = None) -> str | None:
    """Put this Slurm job back in the queue; None when done, else why it was not.

    `progress`: whether this run saved a checkpoint beyond where it started (else a
    requeue would only repeat the same stretch).
    """
    log = log or _LOG
    job = env.get("SLURM_JOB_ID")
    if not job:
        return "not a Slurm job (SLURM_JOB_ID unset): rerun snakemake to resume from the checkpoint"
    if not progress:
        return ("the job saved no checkpoint beyond where it started, so a requeue would repeat the same "
                "stretch: raise the rule's runtime (CRYSTALRL_RUNTIME_SCALE) or lower ckpt_every")
    if shutil.which("scontrol") is None:
        return "scontrol not found: rerun snakemake to resume from the checkpoint"
    proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    if proc.returncode:
        return (f"`scontrol requeue {job}` failed ({proc.stderr.strip()}); the cluster may not allow "
                "requeues: rerun snakemake to resume from the checkpoint")
    log.warning("requeued Slurm job %s: it resumes from its checkpoint when it starts again", job)
    return None
