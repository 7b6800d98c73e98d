"""Resumable training state: Orbax checkpoints in a directory that is never a rule output.

Snakemake deletes a failed job's outputs, so `ckpt_dir` lives beside them: one Orbax
step folder per save with `state` (params, optimizer state, RNG key) and `meta`
(JSON: step, data order, the run's identity, metrics history); the last `keep` are
kept. The finished model goes to a model directory (`crystalrl.model.store`).

A run resumes only its own checkpoints (`resume`): `meta["run"]` holds the run's
identity (its settings and digests of every model and data array it starts from),
and checkpoints of any other run are set aside, never resumed. Set-aside folders
keep a name that says why (`<dir>.superseded-<time>`, `<dir>.corrupt/<step>`); the
superseded ones are deleted once a new run has a checkpoint of its own, so a run
that fails before its first checkpoint has cost nothing, and a run whose config was
changed and changed back before that finds its checkpoints again.

Saves are asynchronous: an error while writing (a full disk) surfaces at the next
save or at the end of the run, so a job can lose the steps since its last complete
checkpoint, never more.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

_LOG = logging.getLogger("crystalrl.checkpoint")


def differing_keys(old: Any, new: dict) -> list[str]:
    """Keys of the run identity `new` whose value the stored identity `old` does not share."""
    old = old if isinstance(old, dict) else {}
    return sorted(k for k in set(new) | set(old) if old.get(k) != new.get(k))


class CheckpointStore:
    """Resumable training checkpoints in `ckpt_dir` (Orbax CheckpointManager, last `keep`)."""

    def __init__(self, ckpt_dir: str | os.PathLike, keep: int = 3, log: logging.Logger | None = None):
        self.dir = Path(ckpt_dir).resolve()
        self.keep = keep
        self.log = log or _LOG
        self.saved = False  # whether this run has saved yet (its first save deletes superseded folders)
        self.manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=self.keep,
                                                                                     create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: dict, meta: dict) -> None:
        """Save `state` (pytree of arrays) and `meta` (JSON-able) as step `step` (async).

        The first save of a run waits for the write to complete, then deletes the folders
        of checkpoints that runs before it set aside.
        """
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        if not self.saved:
            self.saved = True
            old = self._superseded()
            if old:
                self.manager.wait_until_finished()
            for folder in old:
                shutil.rmtree(folder, ignore_errors=True)
                self.log.info("deleted the set-aside checkpoints %s: this run has its own now (step %d)",
                              folder, step)

    def _superseded(self) -> list[Path]:
        """Folders of checkpoints set aside for this directory, newest first."""
        return sorted(self.dir.parent.glob(f"{self.dir.name}.superseded-*"), reverse=True)

    def _reclaim(self, run_id: dict) -> None:
        """Move set-aside checkpoints of run `run_id` back (a run resumed after a config was
        changed and changed back), when the directory holds none of its own."""
        if self.all_steps():
            return
        for folder in self._superseded():
            try:
                other = ocp.CheckpointManager(folder)
                step = other.latest_step()
                run = None if step is None else other.restore(step, args=ocp.args.Composite(
                    meta=ocp.args.JsonRestore()))["meta"].get("run")
                other.close()
            except Exception:  # noqa: BLE001 - an unreadable folder is simply not reclaimed
                continue
            if run == run_id:
                self.manager.close()
                shutil.rmtree(self.dir)
                os.replace(folder, self.dir)
                self.manager = self._open()
                self.log.info("checkpoints of this very run were set aside as %s; moved back", folder)
                return

    def read_meta(self, step: int | None = None) -> dict | None:
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def _restore(self, step: int, abstract_state) -> tuple[dict, dict]:
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def resume(self, abstract_state, run_id: dict, *, max_step: int | None = None
               ) -> tuple[int, dict, dict] | None:
        """(step, state, meta) of the newest intact checkpoint of run `run_id`, or None: start afresh.

        - Checkpoints whose `meta["run"]` differs from `run_id` belong to another run
          (other settings, start model, data): the whole folder is set aside, with the
          differing keys logged.
        - A step that cannot be read (a truncated or corrupt file) is moved to
          `<dir>.corrupt/` with the error logged, and the next older one is tried.
        - Steps beyond `max_step` (a run asked to stop earlier than a previous one went)
          are deleted.
        `abstract_state` gives the tree structure, dtypes and shardings to restore into.
        """
        self._reclaim(run_id)
        for step in reversed(self.all_steps()):  # the newest readable identity decides for the folder
            try:
                other = self.read_meta(step).get("run")
            except Exception as exc:  # noqa: BLE001 - any unreadable step is skipped the same way
                self._set_aside_step(step, exc)
                continue
            if other != run_id:
                self.set_aside(f"they belong to another run (it differs in {differing_keys(other, run_id)})")
                return None
            break
        if max_step is not None:
            self.drop_after(max_step)
        for step in reversed(self.all_steps()):
            try:
                state, meta = self._restore(step, abstract_state)
            except Exception as exc:  # noqa: BLE001
                self._set_aside_step(step, exc)
                continue
            if meta.get("run") == run_id:
                return step, state, meta
            self._set_aside_step(step, ValueError("written by another run than the newer steps"))
        return None

    def _set_aside_step(self, step: int, exc: BaseException) -> None:
        self.manager.wait_until_finished()
        dest = self.dir.with_name(self.dir.name + ".corrupt") / f"{step}-{time.strftime('%Y%m%dT%H%M%S')}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.dir / str(step), dest)
        self.manager.reload()
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        self.log.warning("checkpoint step %d in %s is unreadable (%s: %s); moved to %s, trying the "
                         "next older one. Delete %s when you no longer need it.", step, self.dir,
                         type(exc).__name__, first, dest, dest.parent)

    def set_aside(self, why: str) -> Path | None:
        """Rename every checkpoint to `<dir>.superseded-<time>` (logged with `why`); deleted by the
        first save of a later run. Returns the new name (None when there was nothing to set aside)."""
        self.manager.wait_until_finished()
        if not self.all_steps():
            return None
        self.manager.close()
        dest = self.dir.with_name(f"{self.dir.name}.superseded-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(self.dir, dest)
        self.manager = self._open()
        self.log.warning("checkpoints in %s were not resumed: %s. They are kept as %s until this run "
                         "writes its first checkpoint.", self.dir, why, dest)
        return dest

    def drop_after(self, step: int) -> list[int]:
        """Delete checkpoints later than `step` (a run asked to stop earlier than a previous one went)."""
        self.manager.wait_until_finished()
        later = [s for s in self.all_steps() if s > step]
        for s in later:
            self.manager.delete(s)
        self.manager.reload()
        if later:
            self.log.warning("dropped checkpoints at steps %s beyond the %d steps asked for", later, step)
        return later

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
