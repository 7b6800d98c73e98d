"""Import parameters of the public CrystalFormer (Haiku) into the NNX model.

Haiku names modules by creation order (`linear`, `linear_1`, ...); the map below
is that order for this architecture (see ../shared/reference/README.md). Haiku's
Linear stores w as (in, out), the same layout as an NNX kernel, so values are
copied as they are. Accepts the `.npz` of flat `module/param` keys or a public
checkpoint pickle (`{"params": {module: {param: array}}, ...}`).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from crystalrl.model.config import ModelConfig


def haiku_names(cfg: ModelConfig) -> dict[str, tuple]:
    """Haiku `module/param` -> attribute path of the matching NNX variable."""
    def idx(base: str, i: int) -> str:
        return base if i == 0 else f"{base}_{i}"

    names = {f"~/{k}_embeddings": (f"{k}_embed", "embedding") for k in "gwa"}
    lin = {}  # haiku linear index -> module path
    if cfg.h0_size > 0:
        lin.update({0: ("h0_in",), 1: ("h0_out",)})
    else:
        names["~/w_params"] = ("w_params",)
    first = 2 if cfg.h0_size > 0 else 0
    lin.update({first: ("w_proj",), first + 1: ("a_proj",)})
    lin.update({first + 2 + c: ("xyz_proj", c) for c in range(3)})
    L = cfg.num_layers
    for l in range(L):
        lin[first + 5 + 2 * l] = ("blocks", l, "mlp", "up")
        lin[first + 6 + 2 * l] = ("blocks", l, "mlp", "down")
        mha = idx("multi_head_attention", l)
        for hk_name, ours in (("query", "query"), ("key", "key"), ("value", "value"),
                              ("linear", "out")):
            names[f"{mha}/{hk_name}/w"] = ("blocks", l, "attn", ours, "kernel")
            names[f"{mha}/{hk_name}/b"] = ("blocks", l, "attn", ours, "bias")
        for j, ln in ((2 * l, "ln_attn"), (2 * l + 1, "ln_mlp")):
            names[f"{idx('layer_norm', j)}/scale"] = ("blocks", l, ln, "scale")
            names[f"{idx('layer_norm', j)}/offset"] = ("blocks", l, ln, "bias")
    lin[first + 5 + 2 * L] = ("head",)
    names[f"{idx('layer_norm', 2 * L)}/scale"] = ("final_ln", "scale")
    names[f"{idx('layer_norm', 2 * L)}/offset"] = ("final_ln", "bias")
    for i, path in lin.items():
        names[f"{idx('linear', i)}/w"] = path + ("kernel",)
        names[f"{idx('linear', i)}/b"] = path + ("bias",)
    return names


def read_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Flat {'module/param': array} from an .npz or a public checkpoint pickle."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    with open(path, "rb") as fh:
        obj = pickle.load(fh)  # trusted local checkpoint only: pickle can run code
    params = obj.get("params", obj) if isinstance(obj, dict) else None
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a dict of Haiku params (or {{'params': ...}})")
    flat = {}
    for mod, leaves in params.items():
        if not isinstance(leaves, dict):
            raise ValueError(f"{path}: module {mod!r} is not a dict of parameters")
        for name, arr in leaves.items():
            flat[f"{mod}/{name}"] = np.asarray(arr)
    return flat


def _variable(model, path: tuple):
    obj = model
    for p in path:
        obj = obj[p] if isinstance(p, int) else getattr(obj, p)
    return obj


def import_into(model, params: dict[str, np.ndarray], *, source: str = "params") -> None:
    """Copy flat Haiku params into `model` in place; every key must match one slot."""
    names = haiku_names(model.cfg)
    missing = sorted(set(names) - set(params))
    extra = sorted(set(params) - set(names))
    if missing or extra:
        raise KeyError(f"{source}: Haiku parameters do not match the config "
                       f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                       f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''})")
    for key, path in names.items():
        var = _variable(model, path)
        arr = np.asarray(params[key])
        if tuple(arr.shape) != tuple(var.shape):
            raise ValueError(f"{source}: {key} has shape {arr.shape}, model slot "
                             f"{'.'.join(map(str, path))} expects {tuple(var.shape)}")
        var.set_value(jnp.asarray(arr, dtype=var.dtype))


def load_haiku_params(path: str | os.PathLike, cfg: ModelConfig) -> nnx.State:
    """The nnx.Param state of a CrystalFormer(cfg) holding the Haiku params at `path`.

    Use as `nnx.update(model, load_haiku_params(path, cfg))`.
    """
    from crystalrl.model.transformer import CrystalFormer
    model = nnx.eval_shape(lambda: CrystalFormer(cfg, rngs=nnx.Rngs(0)))
    params = read_params(path)
    import_into(model, params, source=str(path))
    return nnx.state(model, nnx.Param)
