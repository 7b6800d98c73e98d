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

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from crystalrl.distributed import barrier, is_primary

_LOG = logging.getLogger("crystalrl.checkpoint")


def differing_keys(old: Any, new: dict) -> list[str]:
    """Keys of the run identity `new` whose value the stored identity `old` does not share."""
    old = old if isinstance(old, dict) else {}
    return sorted(k for k in set(new) | set(old) if old.get(k) != new.get(k))


class CheckpointStore:
    """Resumable training checkpoints in `ckpt_dir` (Orbax CheckpointManager, last `keep`).

    With several JAX processes (`crystalrl.distributed`) every process saves and restores
    (Orbax coordinates them); folders are inspected from their files and moved by process
    0 alone, the others waiting at a barrier.
    """

    def __init__(self, ckpt_dir: str | os.PathLike, keep: int = 3, log: logging.Logger | None = None):
        self.dir = Path(ckpt_dir).resolve()
        self.keep = keep
        self.log = log or _LOG
        self.saved = False  # whether this run has saved yet (its first save deletes superseded folders)
        self.manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=self.keep,
                                                                                     create=True))

    def _reopen(self) -> None:
        """After process 0 moved folders: every process sees the directory anew."""
        barrier(f"crystalrl-checkpoints-{self.dir}")
        self.manager.close()
        self.manager = self._open()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return _steps(self.dir)

    def save(self, step: int, state: dict, meta: dict) -> None:
        """Save `state` (pytree of arrays) and `meta` (JSON-able) as step `step` (async).

        The first save of a run waits for the write to complete, then deletes the folders
        of checkpoints that runs before it set aside.
        """
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        if not self.saved:
            self.saved = True
            old = _superseded(self.dir)
            if old:
                self.manager.wait_until_finished()
            if old and is_primary():
                for folder in old:
                    shutil.rmtree(folder, ignore_errors=True)
                    self.log.info("deleted the set-aside checkpoints %s: this run has its own now (step %d)",
                                  folder, step)

    def read_meta(self, step: int | None = None) -> dict | None:
        step = self.latest_step() if step is None else step
        return None if step is None else _read_meta(self.dir, step)

    def _restore(self, step: int, abstract_state) -> tuple[dict, dict]:
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def resume(self, abstract_state, run_id: dict, *, max_step: int | None = None
               ) -> tuple[int, dict, dict] | None:
        """(step, state, meta) of the newest intact checkpoint of run `run_id`, or None: start afresh.

        - Checkpoints whose `meta["run"]` differs from `run_id` belong to another run
          (other settings, start model, data): the whole folder is set aside, with the
          differing keys logged; set-aside checkpoints of this very run are moved back.
        - A step that cannot be read (a truncated or corrupt file) is moved to
          `<dir>.corrupt/` with the error logged, and the next older one is tried.
        - Steps beyond `max_step` (a run asked to stop earlier than a previous one went)
          are deleted.
        `abstract_state` gives the tree structure, dtypes and shardings to restore into.
        """
        if is_primary():
            _tidy(self.dir, run_id, max_step, self.log)
        self._reopen()
        for step in reversed(self.all_steps()):
            try:
                state, meta = self._restore(step, abstract_state)
            except Exception as exc:  # noqa: BLE001 - any unreadable step is skipped the same way
                if is_primary():
                    _set_aside_step(self.dir, step, exc, self.log)
                self._reopen()
                continue
            return step, state, meta
        return None

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


# ---------------------------------------------------------------- the folder, from its files
def _steps(folder: Path) -> list[int]:
    """Steps Orbax finished writing (integer-named folders; a save in progress has another name)."""
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []


def _read_meta(folder: Path, step: int) -> dict:
    return json.loads((folder / str(step) / "meta" / "metadata").read_text())


def _superseded(folder: Path) -> list[Path]:
    """Folders of checkpoints set aside for `folder`, newest first."""
    return sorted(folder.parent.glob(f"{folder.name}.superseded-*"), reverse=True)


def _tidy(folder: Path, run_id: dict, max_step: int | None, log: logging.Logger) -> None:
    """What `resume` decides from the files alone (process 0): reclaim, set aside, skip, drop."""
    if not _steps(folder):
        _reclaim(folder, run_id, log)
    for step in reversed(_steps(folder)):  # the newest readable identity decides for the folder
        try:
            other = _read_meta(folder, step).get("run")
        except Exception as exc:  # noqa: BLE001
            _set_aside_step(folder, step, exc, log)
            continue
        if other != run_id:
            set_aside(folder, f"they belong to another run (it differs in {differing_keys(other, run_id)})", log)
            return
        break
    for step in _steps(folder):
        try:
            same = _read_meta(folder, step).get("run") == run_id
        except Exception as exc:  # noqa: BLE001
            _set_aside_step(folder, step, exc, log)
            continue
        if not same:
            _set_aside_step(folder, step, ValueError("written by another run than the newer steps"), log)
    if max_step is not None:
        later = [s for s in _steps(folder) if s > max_step]
        for s in later:
            shutil.rmtree(folder / str(s))
        if later:
            log.warning("dropped checkpoints at steps %s beyond the %d steps asked for", later, max_step)


def _reclaim(folder: Path, run_id: dict, log: logging.Logger) -> None:
    """Move set-aside checkpoints of run `run_id` back (a config changed and changed back)."""
    for old in _superseded(folder):
        steps = _steps(old)
        try:
            run = _read_meta(old, steps[-1]).get("run") if steps else None
        except Exception:  # noqa: BLE001 - an unreadable folder is simply not reclaimed
            continue
        if run == run_id:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(old, folder)
            log.info("checkpoints of this very run were set aside as %s; moved back", old)
            return


def _unused(path: Path) -> Path:
    """`path`, or `path-1`, `path-2`, ... whichever does not exist yet (two set-asides in one second)."""
    n, out = 0, path
    while out.exists():
        n += 1
        out = path.with_name(f"{path.name}-{n}")
    return out


def _set_aside_step(folder: Path, step: int, exc: BaseException, log: logging.Logger) -> None:
    dest = _unused(folder.with_name(folder.name + ".corrupt") / f"{step}-{time.strftime('%Y%m%dT%H%M%S')}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(folder / str(step), dest)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    log.warning("checkpoint step %d in %s is unreadable (%s: %s); moved to %s, trying the next older one. "
                "Delete %s when you no longer need it.", step, folder, type(exc).__name__, first, dest, dest.parent)


def set_aside(folder: Path, why: str, log: logging.Logger) -> Path | None:
    """Rename every checkpoint of `folder` to `<folder>.superseded-<time>` (logged with `why`); deleted
    by the first save of a later run. Returns the new name (None when there was nothing to set aside)."""
    if not _steps(folder):
        return None
    dest = _unused(folder.with_name(f"{folder.name}.superseded-{time.strftime('%Y%m%dT%H%M%S')}"))
    os.replace(folder, dest)
    folder.mkdir()
    log.warning("checkpoints in %s were not resumed: %s. They are kept as %s until this run writes its "
                "first checkpoint.", folder, why, dest)
    return dest
