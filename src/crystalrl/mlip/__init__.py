"""MLIP backends behind one interface: `get_mlip(name, ...)` -> `MLIP`.

`chgnet` runs offline (weights in the wheel) and is the default for the demo and
tests; `orb` is the paper's reward model (Orb v2/v3), loaded from a local
weights file or downloaded by orb-models where the internet is reachable.
"""
from __future__ import annotations

import functools

from .base import MLIP

__all__ = ["MLIP", "get_mlip", "resolve_device", "BACKENDS"]

BACKENDS = ("chgnet", "orb")


def get_mlip(name: str, *, model: str | None = None, weights_path: str | None = None,
             device: str = "cpu", **kw) -> MLIP:
    """The MLIP backend `name`, loaded once per process for the same arguments.

    device: "cpu", "cuda[:i]" or "auto" (cuda when torch sees a GPU).
    """
    return _get_mlip(name.lower(), model, None if weights_path is None else str(weights_path),
                     resolve_device(device), tuple(sorted(kw.items())))


def resolve_device(device: str | None) -> str:
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


@functools.lru_cache(maxsize=8)
def _get_mlip(name, model, weights_path, device, kw_items) -> MLIP:
    kw = dict(kw_items)
    if name == "chgnet":
        from .chgnet import CHGNetMLIP

        return CHGNetMLIP(model=model, weights_path=weights_path, device=device, **kw)
    if name == "orb":
        from .orb import OrbMLIP

        return OrbMLIP(model=model or "orb-v2", weights_path=weights_path, device=device, **kw)
    raise ValueError(f"unknown MLIP backend {name!r}; choose one of {BACKENDS}")


from .config import MLIPConfig, check_config  # noqa: E402


def load_mlip(cfg: MLIPConfig) -> MLIP:
    """The MLIP of the `mlip` config section `cfg`: the one way to build an MLIP from config."""
    return get_mlip(cfg.backend, model=cfg.model, weights_path=cfg.weights_path, device=cfg.device)


__all__ += ["MLIPConfig", "check_config", "load_mlip"]
