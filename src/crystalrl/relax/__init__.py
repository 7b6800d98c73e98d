"""MLIP relaxation of generated structures (FIRE with a Frechet cell filter).

`relax_structures` / `relax_samples` run TorchSim's batched FIRE over many
structures per model call where the MLIP batches (`batched.py`), and ASE's FIRE +
FrechetCellFilter one structure at a time otherwise (`ase_fire.py`, the reference);
`Guards` (`guards.py`) mark structures that explode; `RelaxConfig` is the config.
"""
from __future__ import annotations

import importlib

from .config import RelaxConfig, check_config

# the rest imports torch, ASE and pymatgen: loaded when used, so that checking a config
# (every Snakemake call parses the workflow) stays fast
_LAZY = {"relax_ase": "ase_fire", "relax_one": "ase_fire", "Guards": "guards", "min_distance": "guards",
         "COLUMNS": "run", "choose_method": "run", "chunk_rows": "run", "relax_samples": "run",
         "relax_structures": "run"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["COLUMNS", "Guards", "RelaxConfig", "check_config", "choose_method", "chunk_rows", "min_distance", "relax_ase",
           "relax_one", "relax_samples", "relax_structures"]
