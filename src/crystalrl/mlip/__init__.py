"""MLIP backends behind one interface: `load_mlip(MLIPConfig.from_dict(cfg["mlip"]))` -> `MLIP`.

Backends: `chgnet` and `sevennet` run offline (weights in their wheels); `orb` (the
paper's reward model, Orb v2/v3), `mace` and `mattersim` load local weights files
(or download where the internet is reachable); `module:factory` wraps any ASE
calculator. All but the last batch many structures per model call (`BatchedMLIP`),
which is also what the batched relaxation runs on. `check_config` finds what would
stop a job (missing package, weights file, factory) at config time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .backends import BACKENDS
from .config import MLIPConfig, check_config, load_mlip, resolve_device

if TYPE_CHECKING:
    from .base import MLIP, BatchedMLIP


def __getattr__(name: str):
    # the interface classes import torch: loaded when used, so that reading and checking
    # a config (every Snakemake call parses the workflow) stays fast
    if name in ("MLIP", "BatchedMLIP"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["BACKENDS", "MLIP", "BatchedMLIP", "MLIPConfig", "check_config", "load_mlip",
           "resolve_device"]


