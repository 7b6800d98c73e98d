"""MLIP relaxation of generated structures (FIRE with a Frechet cell filter).

`relax_structures` / `relax_samples` run TorchSim's batched FIRE over many
structures per model call where the MLIP batches (`batched.py`), and ASE's FIRE +
FrechetCellFilter one structure at a time otherwise (`ase_fire.py`, the reference);
`Guards` (`guards.py`) mark structures that explode; `RelaxConfig` is the config.
"""
from __future__ import annotations

from .ase_fire import relax_ase, relax_one
from .config import RelaxConfig, check_config
from .guards import Guards, min_distance
from .run import COLUMNS, choose_method, chunk_rows, relax_samples, relax_structures

__all__ = ["COLUMNS", "Guards", "RelaxConfig", "check_config", "choose_method", "chunk_rows", "min_distance", "relax_ase",
           "relax_one", "relax_samples", "relax_structures"]
