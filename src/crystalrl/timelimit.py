"""Through Slurm time limits, unattended: checkpoint before the limit, requeue, resume.

1000 GPU-hours of pretraining do not fit in one Slurm job. A training loop asks
`StopRequest.requested()` after every step; it says stop

- when the job's time left (`squeue -o %L`, read at the start), less the longest step
  seen so far, falls below CRYSTALRL_STOP_BEFORE_LIMIT_S (default 600 s; at most half the
  job's time): the margin is for the checkpoint and the exit, not for a slow step, or
- when the process got SIGTERM or SIGUSR1: the warning the long rules ask Slurm for
  (`--signal=TERM@<s>`, which Slurm may send up to a minute early and only to job steps
  that exist by then), the SIGTERM at the limit itself, or a preemption.

The loop then saves a checkpoint at that step and raises `TimeLimit`; `stages.main`
requeues the Slurm job (`scontrol requeue`): it keeps its job id and goes back to the
queue, so Snakemake's Slurm executor keeps waiting for it, and when it starts again the
stage resumes from that checkpoint. Only a stop that saved progress is requeued: a job
that cannot make one step of progress within its time limit fails with a message saying
so, instead of looping. Workers that the limit's own SIGTERM kills before they exit
(a save slower than the margin) count as stopped at the limit too: the job is requeued
when a checkpoint beyond its start exists (`crystalrl.distributed.launch`). Workers that
stopped say so in a stop file and exit 0 together: srun's --kill-on-bad-exit would kill
the others, still saving, as soon as the first exited with EXIT_TIME_LIMIT.

Several processes of one job (`crystalrl.distributed`) stop at the same step: each
step they agree whether any of them wants to.
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


ENV_STOP_BEFORE = "CRYSTALRL_STOP_BEFORE_LIMIT_S"


def parse_time_left(text: str) -> float | None:
    """Seconds in squeue's `%L` ("45", "12:34", "1:02:03", "2-01:02:03"); None for UNLIMITED/NOT_SET."""
    text = text.strip()
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    if not text or not all(p.isdigit() for p in parts) or (days and not days.isdigit()):
        return None
    seconds = 0
    for p in parts:
        seconds = 60 * seconds + int(p)
    return seconds + 86400 * int(days or 0)


def job_deadline(env: Mapping[str, str] = os.environ, log: logging.Logger | None = None) -> float | None:
    """When (time.time()) this Slurm job should stop to leave time for a checkpoint; None off Slurm."""
    import time

    job = env.get("SLURM_JOB_ID")
    if not job or shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    left = parse_time_left(out.stdout) if out.returncode == 0 else None
    if left is None:
        return None
    margin = min(float(env.get(ENV_STOP_BEFORE, 600)), left / 2)
    (log or _LOG).info("Slurm job %s has %.0f s left: checkpointing and requeueing %.0f s before its limit",
                       job, left, margin)
    return time.time() + left - margin


_early: list[int] = []  # signals that arrived before a training loop was listening


def catch_signals_early() -> None:
    """Record SIGTERM/SIGUSR1 from the start of a job process: one that arrives while the stage
    is still importing would otherwise kill it before it can checkpoint."""
    import threading

    if threading.current_thread() is threading.main_thread():
        for s in StopRequest.SIGNALS:
            signal.signal(s, lambda signum, frame: _early.append(signum))


class StopRequest:
    """Whether to stop for a time limit: the job's deadline passed, or SIGTERM/SIGUSR1 arrived.

    Use as a context manager around a training loop: the previous handlers come back after it.
    `requested()` gives the same answer in every process of a job.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, log: logging.Logger | None = None, env: Mapping[str, str] = os.environ):
        self.log = log or _LOG
        self.signalled: int | None = _early[0] if _early else None
        self.deadline = job_deadline(env, self.log)
        self._old: dict = {}
        self._last: float | None = None  # when requested() was last asked, and the longest gap between asks
        self._longest = 0.0

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
        """Whether this process or any other of the job wants to stop (the same answer in all)."""
        import time

        import jax

        now = time.time()
        # the next step, and the save after it, must end before the deadline: stop one longest step early
        if self._last is not None:
            self._longest = max(self._longest, now - self._last)
        self._last = now
        mine = self.signalled is not None or (self.deadline is not None and now + self._longest >= self.deadline)
        if jax.process_count() == 1:
            return mine
        import numpy as np
        from jax.experimental import multihost_utils

        return bool(np.asarray(multihost_utils.process_allgather(np.int32(mine))).max())


def stop_record(step: int, env: Mapping[str, str] = os.environ) -> dict:
    """What a checkpoint remembers of a time-limit stop (the rule log of each job is replaced by the next)."""
    import time

    return dict(step=step, at=time.strftime("%Y-%m-%dT%H:%M:%S"), job=env.get("SLURM_JOB_ID"))


def stops_text(stops: list[dict]) -> str:
    return "; ".join(f"after step {s['step']} at {s['at']} (Slurm job {s['job']})" for s in stops)


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
