"""Orbax checkpoints: resumable training state, and the final model directory.

Two kinds of directories:
- the *training* checkpoint directory (`ckpt_dir`, never a Snakemake output, since
  Snakemake deletes a failed job's outputs): one Orbax step folder per save with
  `state` (params, optimizer state, RNG key) and `meta` (JSON: step, data order,
  model config, train hyper-parameters, metrics history); the last `keep` kept.
- the *model* directory that later rules consume (`save_model` / `load_model`):
  `config.json` (ModelConfig), `meta.json`, `params/` (Orbax). Written to a temp
  folder beside it and renamed into place, so a killed job never leaves half a model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from crystalrl.io import atomic_dir

MODEL_FORMAT = "crystalrl-model/1"


def build_model(cfg, seed: int = 0):
    """A freshly initialised CrystalFormer with `params` and `dropout` RNG streams."""
    from crystalrl.model.transformer import CrystalFormer
    return CrystalFormer(cfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1))


def abstract_like(tree, sharding: jax.sharding.Sharding | None = None):
    """ShapeDtypeStructs of `tree` (placed with `sharding`, default device 0) for Orbax restore."""
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def params_of(model) -> dict:
    """The model's trainable parameters as a plain nested dict of arrays."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def set_params(model, params: dict) -> None:
    """Write a plain-dict parameter tree (as from `params_of`) into `model` in place."""
    state = nnx.state(model, nnx.Param)
    want = jax.tree.map(lambda x: (x.shape, str(x.dtype)), nnx.to_pure_dict(state))
    got = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), params)
    if jax.tree_util.tree_structure(want) != jax.tree_util.tree_structure(got) or want != got:
        raise ValueError("parameter tree does not match the model built from its config: "
                         f"{_first_difference(want, got)}")
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)


def _first_difference(want, got) -> str:
    fw = dict(jax.tree_util.tree_flatten_with_path(want, is_leaf=lambda x: isinstance(x, tuple))[0])
    fg = dict(jax.tree_util.tree_flatten_with_path(got, is_leaf=lambda x: isinstance(x, tuple))[0])
    for k in sorted(set(fw) | set(fg), key=str):
        if fw.get(k) != fg.get(k):
            return f"at {jax.tree_util.keystr(k)}: model {fw.get(k)} vs given {fg.get(k)}"
    return "tree structures differ"


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


# ---------------------------------------------------------------- final model dir
def save_model(model_dir: str | os.PathLike, model, cfg, extra_meta: dict | None = None) -> None:
    """Write `model` (params) + `cfg` to `model_dir` atomically (temp dir + rename)."""
    with atomic_dir(model_dir) as tmp:
        (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        meta = {"format": MODEL_FORMAT, **(extra_meta or {})}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(tmp / "params", params_of(model))
        ckptr.wait_until_finished()
        ckptr.close()


def read_model_meta(model_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "meta.json").read_text())


def load_model(path: str | os.PathLike, cfg=None):
    """Load a model directory written by `save_model` -> (model, cfg).

    `path` may also be a public CrystalFormer (Haiku) checkpoint file (`.pkl`/`.npz`),
    imported through `crystalrl.model.haiku_import`; then `cfg` (its ModelConfig) is
    required, since those files carry no config.
    """
    from crystalrl.model.config import ModelConfig
    path = Path(path)
    if path.is_file():
        return _load_haiku(path, cfg)
    if not (path / "config.json").exists() or not (path / "params").exists():
        raise FileNotFoundError(f"{path}: not a crystalrl model directory "
                                "(expected config.json and params/ written by save_model)")
    cfg = ModelConfig.from_dict(json.loads((path / "config.json").read_text()))
    model = build_model(cfg)
    ckptr = ocp.StandardCheckpointer()
    params = ckptr.restore(path.resolve() / "params", abstract_like(params_of(model)))
    ckptr.close()
    set_params(model, params)
    return model, cfg


def _load_haiku(path: Path, cfg):
    from crystalrl.model import haiku_import
    if cfg is None:
        raise ValueError(f"{path}: a Haiku checkpoint has no config; pass cfg=ModelConfig(...)")
    model = build_model(cfg)
    haiku_import.import_into(model, haiku_import.read_params(path), source=str(path))
    return model, cfg
