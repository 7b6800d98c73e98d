"""Live training curves: a running stage's metrics table mirrored into TensorBoard event files.

Pretrain, SFT and PPO rewrite their metrics Parquet (one row per validation or PPO step:
losses, reward and its components, KL, validity, steps/s) as they go. While such a stage
runs, `CurveMirror` reads that table every `every_s` seconds from a background thread and
appends its new rows as TensorBoard scalars (tensorboardX's writer, no TensorFlow) under
`results/{run}/tensorboard/<table name>/`. On a login node:

    tensorboard --logdir results/<run>/tensorboard --port 6006
    # from your laptop: ssh -L 6006:localhost:6006 <login node>, then open localhost:6006

Weights & Biases, when installed and configured with its own variables (`WANDB_PROJECT`;
`WANDB_MODE=offline` on nodes without internet, then `wandb sync`), gets the same rows: one
W&B run per table, named `<run>/<table>`, its id fixed by the table's path so that a
resumed job continues it. W&B is never required: without `WANDB_PROJECT` nothing imports it.

Only the process that runs `stages.main` mirrors (one writer per table, whatever the
number of JAX processes). The table is the truth: a new job (a resumed run) deletes the
event files of the earlier job and writes the whole history again, so no step appears twice.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd

_LOG = logging.getLogger(__name__)


def logdir_for(metrics_path: str | Path) -> Path:
    """results/{run}/metrics/<name>.parquet -> results/{run}/tensorboard/<name>."""
    p = Path(metrics_path)
    return p.parent.parent / "tensorboard" / p.stem


def wandb_requested(log: logging.Logger | None = None) -> bool:
    """W&B mirroring is on when `WANDB_PROJECT` is set and wandb is installed (a warning otherwise)."""
    if not os.environ.get("WANDB_PROJECT"):
        return False
    if importlib.util.find_spec("wandb") is None:
        (log or _LOG).warning("WANDB_PROJECT is set but wandb is not installed (pip install wandb): "
                              "curves go to TensorBoard only")
        return False
    return True


class _WandbRun:
    """One W&B run per metrics table; its id is fixed by the table's path, so a resumed job
    continues the same run."""

    def __init__(self, metrics_path: Path):
        import wandb

        table = metrics_path.resolve()
        run_dir = table.parent.parent  # results/{run}
        directory = Path(os.environ.get("WANDB_DIR") or run_dir / "wandb")
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ["WANDB_PROJECT"], name=f"{run_dir.name}/{table.stem}",
                              id=hashlib.sha256(str(table).encode()).hexdigest()[:16], resume="allow",
                              group=run_dir.name, job_type=table.stem, dir=str(directory), reinit="create_new")

    def log(self, step: int, values: dict) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class CurveMirror:
    """Mirror `metrics_path` into TensorBoard scalars now and then; use as a context manager."""

    def __init__(self, metrics_path: str | Path, every_s: float = 30.0, log: logging.Logger | None = None):
        self.path, self.every_s, self.log = Path(metrics_path), every_s, log or _LOG
        self.logdir = logdir_for(self.path)
        self._writer = None
        self._wandb = False if not wandb_requested(self.log) else None  # None: opened with the first rows
        self._last_step = -np.inf
        self._mtime = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="curve-mirror", daemon=True)

    def sync(self) -> int:
        """Append the table's rows beyond the last mirrored step; how many were written."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0
        if mtime == self._mtime:
            return 0
        self._mtime = mtime
        df = pd.read_parquet(self.path)
        steps = df["step"].to_numpy() if "step" in df else np.arange(1, len(df) + 1)
        new = steps > self._last_step
        if not new.any():
            return 0
        if self._writer is None:
            from tensorboardX import SummaryWriter

            for old in self.logdir.glob("events.out.tfevents.*"):
                old.unlink()
            self._writer = SummaryWriter(str(self.logdir))
        if self._wandb is None:
            self._wandb = _WandbRun(self.path)
        numeric = [c for c in df.columns if c != "step" and pd.api.types.is_numeric_dtype(df[c])]
        for step, (_, row) in zip(steps[new], df[new].iterrows()):
            values = {col: float(row[col]) for col in numeric if np.isfinite(row[col])}
            for col, v in values.items():
                self._writer.add_scalar(col, v, int(step))
            if self._wandb:
                self._wandb.log(int(step), values)
        self._writer.flush()
        self._last_step = steps[new].max()
        return int(new.sum())

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - a half-visible table or a full disk must not stop training
                self.log.warning("TensorBoard mirror of %s skipped a sync: %s", self.path, exc)

    def __enter__(self) -> CurveMirror:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.sync()
        except Exception as e:  # noqa: BLE001
            self.log.warning("TensorBoard mirror of %s failed at the end: %s", self.path, e)
        if self._wandb:
            self._wandb.close()
        if self._writer is not None:
            self._writer.close()
            self.log.info("TensorBoard curves in %s (tensorboard --logdir %s)", self.logdir, self.logdir.parent)
