"""The `mlip` config section as a strict dataclass, and the one way to build an MLIP from it."""
from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from crystalrl.config import ConfigError, SectionConfig

from .backends import BACKENDS, FACTORY_RE, backend_class, missing_packages


@dataclass(frozen=True)
class MLIPConfig(SectionConfig):
    """Which interatomic potential scores and relaxes structures (keys and defaults: the schema's `mlip`).

    backend: chgnet, orb, sevennet, mace, mattersim, or `module:factory` (an ASE calculator);
    model: the backend's model name (None: its default); weights_path: a local weights file;
    weights_url: where the workflow downloads them from (None: the backend's own URL);
    device: cpu, cuda[:i] or auto; batch_size: structures per model call for single points;
    mp2020_corrected: None = the backend's own declaration; options: more loader keywords.
    """

    SECTION: ClassVar[str] = "mlip"

    backend: str
    model: str | None
    weights_path: str | None
    weights_url: str | None
    device: str
    batch_size: int
    mp2020_corrected: bool | None
    options: dict = field(hash=False)

    def __post_init__(self):
        if self.backend not in BACKENDS and not FACTORY_RE.match(self.backend):
            near = difflib.get_close_matches(self.backend, list(BACKENDS), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ConfigError(f"config key 'mlip.backend': unknown backend {self.backend!r}{hint}; "
                              f"one of {', '.join(BACKENDS)}, or module:factory for an ASE calculator")

    @property
    def is_factory(self) -> bool:
        return self.backend not in BACKENDS


def resolve_device(device: str | None) -> str:
    """"auto" (or empty) -> "cuda" when torch sees a GPU, else "cpu"; anything else as given."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def load_mlip(cfg: MLIPConfig):
    """The MLIP of `cfg`, loaded once per process (models take seconds to load and GBs of memory).

    A `weights_path` that is not there fails at once, naming the rule that fetches it: GPU
    jobs never download weights (compute nodes often have no internet)."""
    if cfg.weights_path and not Path(cfg.weights_path).exists():
        raise FileNotFoundError(
            f"MLIP weights {cfg.weights_path} are missing; the local rule fetch_mlip_weights downloads them on "
            f"the submitting host (snakemake --forcerun {cfg.weights_path}), or set mlip.weights_path to a local file")
    return _load(cfg.backend, cfg.model, cfg.weights_path, resolve_device(cfg.device), cfg.mp2020_corrected,
                 cfg.batch_size, json.dumps(cfg.options, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _load(backend, model, weights_path, device, mp2020_corrected, batch_size, options_json):
    options = json.loads(options_json)
    if backend not in BACKENDS:
        from .ase_calc import CalculatorMLIP

        mlip = CalculatorMLIP(backend, mp2020_corrected=mp2020_corrected, options=options, device=device)
    else:
        missing = missing_packages(backend)
        if missing:
            raise ImportError(_missing_message(backend, missing))
        mlip = backend_class(backend)(model=model, weights_path=weights_path, device=device, **options)
        if mp2020_corrected is not None:
            mlip.mp2020_corrected = bool(mp2020_corrected)
    mlip.batch_size = int(batch_size)
    return mlip


def _missing_message(backend: str, missing: list[str]) -> str:
    return (f"config key 'mlip.backend': backend {backend!r} needs {', '.join(missing)}, not installed here; "
            f"install with: {BACKENDS[backend].install}")


def check_config(section: Mapping[str, Any] | MLIPConfig) -> list[str]:
    """Problems of an `mlip` section that would stop a job later, each naming its key (for the
    workflow's parse-time check; nothing is loaded): bad keys or values, a backend whose packages
    are missing, a weights file that does not exist, a `module:factory` that does not import."""
    try:
        cfg = section if isinstance(section, MLIPConfig) else MLIPConfig.from_dict(dict(section or {}))
    except ConfigError as exc:
        return [line for line in str(exc).splitlines() if line.startswith("config key")] or [str(exc)]
    problems = []
    if cfg.weights_path and not Path(cfg.weights_path).exists():
        problems.append(f"config key 'mlip.weights_path': {cfg.weights_path} does not exist")
    if cfg.is_factory:
        from .ase_calc import import_factory

        try:
            import_factory(cfg.backend)
        except ValueError as exc:
            problems.append(str(exc))
        if cfg.mp2020_corrected is None:
            problems.append(f"config key 'mlip.mp2020_corrected': say whether the energies of {cfg.backend!r} "
                            "already carry the MP2020 corrections (true/false)")
        if cfg.model or cfg.weights_path:
            problems.append(f"config key 'mlip.model'/'mlip.weights_path': not used by {cfg.backend!r}; "
                            "pass its arguments in 'mlip.options'")
        return problems
    missing = missing_packages(cfg.backend)
    if missing:
        problems.append(_missing_message(cfg.backend, missing))
    if BACKENDS[cfg.backend].needs_weights and not cfg.weights_path:
        problems.append(f"config key 'mlip.weights_path': backend {cfg.backend!r} needs a local model file")
    return problems
