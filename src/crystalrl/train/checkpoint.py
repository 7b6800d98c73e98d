"""Resumable training state: Orbax checkpoints in a directory that is never a rule output.

Snakemake deletes a failed job's outputs, so `ckpt_dir` lives beside them: one Orbax
step folder per save with `state` (params, optimizer state, RNG key) and `meta`
(JSON: step, data order, model config, train hyper-parameters, metrics history);
the last `keep` are kept. The finished model goes to a model directory
(`crystalrl.model.store`).
"""
from __future__ import annotations

import os
from pathlib import Path

import orbax.checkpoint as ocp


# ---------------------------------------------------------------- training state
class CheckpointStore:
    """Resumable training checkpoints in `ckpt_dir` (Orbax CheckpointManager, last `keep`)."""

    def __init__(self, ckpt_dir: str | os.PathLike, keep: int = 3):
        self.dir = Path(ckpt_dir).resolve()
        self.manager = ocp.CheckpointManager(
            self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, meta: dict) -> None:
        """Save `state` (pytree of arrays) and `meta` (JSON-able) as step `step` (async)."""
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

    def restore_latest(self, abstract_state) -> tuple[int, dict, dict] | None:
        """(step, state, meta) of the newest complete checkpoint, or None if there is none.

        `abstract_state` gives the tree structure, dtypes and shardings to restore into.
        """
        step = self.latest_step()
        if step is None:
            return None
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return step, out["state"], out["meta"]

    def read_meta(self, step: int | None = None) -> dict | None:
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def drop_after(self, step: int) -> list[int]:
        """Delete checkpoints later than `step` (a run asked to stop earlier than a previous one went)."""
        self.manager.wait_until_finished()
        later = [s for s in self.manager.all_steps() if s > step]
        for s in later:
            self.manager.delete(s)
        self.manager.reload()
        return later

    def clear(self) -> None:
        """Delete every checkpoint (used when they belong to a different configuration)."""
        self.manager.wait_until_finished()
        for step in list(self.manager.all_steps()):
            self.manager.delete(step)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
