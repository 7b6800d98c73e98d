"""The `relax` config section as a strict dataclass (keys and defaults: the schema's `relax`)."""
from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from crystalrl.config import ConfigError, SectionConfig


@dataclass(frozen=True)
class RelaxConfig(SectionConfig):
    """fmax (eV/Å) and max_steps of FIRE; n_chunks of the relax stage; fix_symmetry (ASE only);
    method: auto | batched | ase; batch_size: structures relaxed together (batched)."""

    SECTION: ClassVar[str] = "relax"

    fmax: float
    max_steps: int
    n_chunks: int
    fix_symmetry: bool
    method: str
    batch_size: int


def check_config(relax: Mapping[str, Any], mlip: Mapping[str, Any]) -> list[str]:
    """Problems of a `relax` section (with its `mlip` section) that would stop a job later, each
    naming its key: bad keys or values, or `method: batched` where it cannot run."""
    from crystalrl.mlip import MLIPConfig

    try:
        cfg = RelaxConfig.from_dict(dict(relax or {}))
        mlip_cfg = MLIPConfig.from_dict(dict(mlip or {}))
    except ConfigError as exc:
        return [line for line in str(exc).splitlines() if line.startswith("config key")] or [str(exc)]
    if cfg.method != "batched":
        return []
    if mlip_cfg.is_factory:
        return [f"config key 'relax.method': batched relaxation needs a batched backend; "
                f"{mlip_cfg.backend!r} is an ASE calculator (use auto or ase)"]
    if cfg.fix_symmetry:
        return ["config key 'relax.method': fix_symmetry runs ASE's FixSymmetry, one structure at a time "
                "(use auto or ase)"]
    if importlib.util.find_spec("torch_sim") is None:
        return ["config key 'relax.method': batched relaxation needs torch-sim-atomistic "
                "(pip install 'crystalrl[mlip]')"]
    return []
