"""Building, saving and loading a CrystalFormer: the one home of a model's life cycle.

A *model directory* is what rules pass between stages: `config.json` (ModelConfig),
`meta.json` (how it was made) and `params/` (Orbax). It is written to a temp folder
beside its place and renamed there, so a killed job never leaves half a model.
`load_model` also reads a public CrystalFormer (Haiku) checkpoint file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from crystalrl.io import atomic_dir
from crystalrl.model.config import ModelConfig
from crystalrl.model.transformer import CrystalFormer

MODEL_FORMAT = "crystalrl-model/1"


def build_model(cfg: ModelConfig, seed: int = 0) -> CrystalFormer:
    """A freshly initialised model with `params` (key `seed`) and `dropout` (key `seed + 1`) streams.

    The initialisers run as one jitted program: op-by-op eager init of the paper
    config takes ~30 s on a CPU core; the values are the same either way.
    """
    return nnx.jit(lambda: CrystalFormer(cfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1)))()


def abstract_like(tree, sharding: jax.sharding.Sharding | None = None):
    """ShapeDtypeStructs of `tree` (placed with `sharding`, default this process's first device) for Orbax restore."""
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
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


def _checkpointer() -> ocp.StandardCheckpointer:
    """Orbax's checkpointer for this process alone: a model directory is written by one process
    (process 0 of a job with several, `crystalrl.distributed`), not collectively."""
    me = jax.process_index()
    return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}))


def save_model(model_dir: str | os.PathLike, model, cfg: ModelConfig, extra_meta: dict | None = None) -> None:
    """Write `model` (params) + `cfg` to `model_dir` atomically (temp dir + rename)."""
    with atomic_dir(model_dir) as tmp:
        (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        meta = {"format": MODEL_FORMAT, **(extra_meta or {})}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        ckptr = _checkpointer()
        # numpy: Orbax refuses host-local jax.Arrays in a job of several processes
        ckptr.save(tmp / "params", jax.tree.map(np.asarray, params_of(model)))
        ckptr.wait_until_finished()
        ckptr.close()


def read_model_meta(model_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "meta.json").read_text())


def is_model_dir(path: str | os.PathLike) -> bool:
    """Whether `path` looks like a model directory (`config.json` beside `params/`)."""
    path = Path(path)
    return (path / "config.json").is_file() and (path / "params").is_dir()


def load_model(path: str | os.PathLike) -> tuple[CrystalFormer, ModelConfig]:
    """Load a model directory written by `save_model` -> (model, cfg).

    A directory whose config or parameters cannot be read raises ArtifactError naming
    it and the command that rebuilds it. (A public CrystalFormer checkpoint file, which
    carries no config, is read by `crystalrl.model.published.load_published(path, cfg)`.)
    """
    from crystalrl.artifacts import ArtifactError

    path = Path(path)
    if path.is_file():
        raise ValueError(f"{path} is a file, not a model directory: a public CrystalFormer checkpoint has no "
                         "config; read it with crystalrl.model.published.load_published(path, cfg)")
    if not is_model_dir(path):
        raise ArtifactError(path, "not a crystalrl model directory (expected config.json and params/ written "
                                  "by save_model)")
    try:
        cfg = ModelConfig.from_dict(json.loads((path / "config.json").read_text()))
    except (ValueError, TypeError) as exc:  # JSON errors are ValueErrors; ConfigError too
        raise ArtifactError(path, f"config.json cannot be read ({type(exc).__name__}: {exc})") from exc
    model = build_model(cfg)
    ckptr = ocp.StandardCheckpointer()
    try:
        params = ckptr.restore(path.resolve() / "params", abstract_like(params_of(model)))
    except Exception as exc:  # noqa: BLE001 - TensorStore/Orbax raise several types for damaged files
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ArtifactError(path, f"its parameters cannot be read ({type(exc).__name__}: {first})") from exc
    finally:
        ckptr.close()
    set_params(model, params)
    return model, cfg
