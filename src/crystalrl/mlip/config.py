"""The `mlip` config section as a strict dataclass, and the one way to build an MLIP from it."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crystalrl.config import ConfigError, SectionConfig


@dataclass(frozen=True)
class MLIPConfig(SectionConfig):
    """Which interatomic potential scores and relaxes structures (defaults in the schema)."""

    SECTION = "mlip"

    backend: str
    model: str | None
    weights_path: str | None
    device: str
    batch_size: int


def check_config(section: Mapping[str, Any]) -> list[str]:
    """Problems of an `mlip` section that would stop a job later, each naming its key."""
    try:
        cfg = MLIPConfig.from_dict(section)
    except ConfigError as exc:
        return str(exc).splitlines()[1:]
    if cfg.weights_path and not Path(cfg.weights_path).exists():
        return [f"config key 'mlip.weights_path': {cfg.weights_path} does not exist"]
    return []
