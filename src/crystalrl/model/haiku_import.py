"""Import parameters of the public CrystalFormer (Haiku) into the NNX model.

Haiku names modules by creation order (`linear`, `linear_1`, ...); the map below
is that order for this architecture (see ../shared/reference/README.md). Haiku's
Linear stores w as (in, out), the same layout as an NNX kernel, so values are
copied as they are. Accepts the `.npz` of flat `module/param` keys or a public
checkpoint pickle (`{"params": {module: {param: array}}, ...}`, read without
running its code by `crystalrl.model.published.read_checkpoint`).

The shapes of the parameters fix most of the config (`infer_config`), so a
checkpoint written for another config is refused with the differing keys named
(`config_differences`), not with a missing-parameter list.
"""
from __future__ import annotations

import re
from typing import Mapping

import jax.numpy as jnp
import numpy as np

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


class ConfigMismatch(KeyError, ValueError):
    """Haiku parameters written for another model config; the message names the keys.

    A KeyError (a parameter set that does not fit the config's slots) and a
    ValueError (a bad value), so callers catching either see it.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


#: ModelConfig keys that the parameter shapes fix one to one.
SHAPE_KEYS = ("num_layers", "model_size", "embed_size", "h0_size", "Nf", "atom_types",
              "wyck_types", "widening_factor")
_MHA = re.compile(r"^multi_head_attention(_\d+)?$")


def infer_config(params: Mapping[str, np.ndarray], *, source: str = "params") -> dict[str, int]:
    """What the parameter shapes say about the config that wrote them.

    Returns the SHAPE_KEYS plus `heads_x_key` (num_heads * key_size: only their
    product shapes the q/k/v projections) and `output_size` (the shared head's
    width, max(atom_types + 13 Kl, 3 Kx, wyck_types)). n_max, the split of
    heads_x_key, dropout rates and sigmamin leave no trace in the shapes.
    """
    def shape(key: str) -> tuple:
        if key not in params or np.ndim(params[key]) != 2:
            mods = sorted({k.split("/")[0] for k in params})
            raise KeyError(f"{source}: no 2-D parameter {key!r}, so not a CrystalFormer (v0.4) "
                           f"parameter set (modules: {mods[:8]}{'...' if len(mods) > 8 else ''})")
        return tuple(np.shape(params[key]))

    if "~/positional_embeddings" in params:
        raise ConfigMismatch(
            f"{source}: has learned positional embeddings {shape('~/positional_embeddings')}, so "
            "it was written by CrystalFormer < 0.4.1 (e.g. the MP-20 checkpoint); this project "
            "implements the RoPE model of v0.4.1+ (the Alex-20 and RL checkpoints)")
    E = shape("~/g_embeddings")[1]
    first = 0 if "~/w_params" in params else 2
    lin = lambda i: "linear" if i == 0 else f"linear_{i}"  # noqa: E731
    m = shape(f"{lin(first)}/w")[1]
    L = sum(1 for mod in {k.split("/")[0] for k in params} if _MHA.match(mod))
    return dict(
        embed_size=E, wyck_types=shape("~/w_embeddings")[0], atom_types=shape("~/a_embeddings")[0],
        h0_size=0 if first == 0 else shape("linear/w")[1], model_size=m,
        Nf=(shape(f"{lin(first + 2)}/w")[0] - E) // 2, num_layers=L,
        widening_factor=shape(f"{lin(first + 5)}/w")[1] // m,
        heads_x_key=shape("multi_head_attention/query/w")[1],
        output_size=shape(f"{lin(first + 5 + 2 * L)}/w")[1])


def config_differences(params: Mapping[str, np.ndarray], cfg: ModelConfig, *,
                       source: str = "params") -> dict[str, tuple]:
    """{config key: (value the parameters imply, value in cfg)} for every key that differs.

    Keys the shapes do not fix are compared as far as they can be: `num_heads*key_size`
    as a product, Kl from the head width when atom_types + 13 Kl sets it, Kx as an
    upper bound (3 Kx <= head width).
    """
    got = infer_config(params, source=source)
    diff = {k: (got[k], getattr(cfg, k)) for k in SHAPE_KEYS if got[k] != getattr(cfg, k)}
    if got["heads_x_key"] != cfg.num_heads * cfg.key_size:
        diff["num_heads*key_size"] = (got["heads_x_key"], cfg.num_heads * cfg.key_size)
    out = got["output_size"]
    if out != cfg.output_size:
        rest = out - got["atom_types"]
        if rest > 0 and rest % 13 == 0 and rest // 13 != cfg.Kl:
            diff["Kl"] = (rest // 13, cfg.Kl)
        if 3 * cfg.Kx > out:
            diff["Kx"] = (f"<= {out // 3}", cfg.Kx)
        if not {"Kl", "Kx", "atom_types", "wyck_types"} & set(diff):
            diff["Kx/Kl (output head width)"] = (out, cfg.output_size)
    return diff


def check_config(params: Mapping[str, np.ndarray], cfg: ModelConfig, *, source: str = "params") -> None:
    """Raise ConfigMismatch naming every config key on which `params` and `cfg` disagree."""
    diff = config_differences(params, cfg, source=source)
    if diff:
        raise ConfigMismatch(
            f"{source} was written for a different model config than the run's `model:` section; "
            "differing keys: " + "; ".join(f"{k} (checkpoint {a}, config {b})" for k, (a, b) in diff.items())
            + ". Set these keys in the `model:` section to the checkpoint's values, or use a "
            "checkpoint of this config.")


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
        try:
            check_config(params, model.cfg, source=source)
        except ConfigMismatch:
            raise
        except KeyError:
            pass  # too broken to infer a config from: the key lists below say more
        raise KeyError(f"{source}: Haiku parameters do not match the config "
                       f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                       f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''})")
    for key, path in names.items():
        var = _variable(model, path)
        arr = np.asarray(params[key])
        if tuple(arr.shape) != tuple(var.shape):
            check_config(params, model.cfg, source=source)
            raise ValueError(f"{source}: {key} has shape {arr.shape}, model slot "
                             f"{'.'.join(map(str, path))} expects {tuple(var.shape)}")
        var.set_value(jnp.asarray(arr, dtype=var.dtype))
