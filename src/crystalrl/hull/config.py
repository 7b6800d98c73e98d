"""The `hull` config section: checked before any job runs, and the one way to build a hull from it."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import pandas as pd

from crystalrl.config import ConfigError, SectionConfig
from crystalrl.hull.readers import KEYWORDS, load_reference, reference_format
from crystalrl.hull.reference import HullReference


@dataclass(frozen=True)
class HullConfig(SectionConfig):
    """The `hull` config section (keys and defaults: the schema's `hull`).

    reference: alexandria, mp_bundled or a file; format: what that file holds;
    path/url/sha256: where the Alexandria hull is downloaded to and from;
    elemental_entries: the elemental reference entries (required with a formation table).
    """

    SECTION: ClassVar[str] = "hull"

    reference: str
    format: str
    path: str | None
    url: str | None
    sha256: str | None
    elemental_entries: str | None

    @property
    def file_format(self) -> str | None:
        """The format of the reference file (None for mp_bundled)."""
        if self.reference == "mp_bundled":
            return None
        if self.reference == "alexandria":
            return "entries" if self.format == "auto" else self.format
        return reference_format(self.reference) if self.format == "auto" else self.format

    @property
    def file(self) -> str | None:
        """The reference file the config points to (None for mp_bundled)."""
        if self.reference == "mp_bundled":
            return None
        return self.path if self.reference == "alexandria" else self.reference

    def input_files(self) -> list[str]:
        """The local files a hull built from this config reads (rule inputs)."""
        return [f for f in (self.file, self.elemental_entries) if f]


def load_hull(cfg: HullConfig) -> HullReference:
    """The hull reference a config describes: the one way to build a hull from config.

    A formation table without `elemental_entries` is refused: the workflow places MLIP
    total energies on the hull, and those need the elemental reference energies.
    """
    if cfg.file_format == "formation_table" and not cfg.elemental_entries:
        raise ValueError(f"config key 'hull.elemental_entries': the formation-energy table {cfg.file} "
                         "needs elemental reference entries to place MLIP energies on it")
    if cfg.reference == "mp_bundled":
        return load_reference("mp_bundled", elemental_entries=cfg.elemental_entries)
    if not cfg.file:
        raise ValueError("config key 'hull.path': reference 'alexandria' needs the path of the hull file")
    return load_reference(cfg.file, elemental_entries=cfg.elemental_entries, format=cfg.file_format)


def check_config(cfg_dict: Mapping[str, Any] | None, *, root: str | os.PathLike | None = None) -> list[str]:
    """Problems of a `hull` config section that would stop a job later, each naming its key.

    For the workflow's parse-time check: bad keys or values, a reference file or
    elemental entries file that does not exist (and, for the Alexandria hull, no URL
    to download it from), a formation table without elemental entries or without
    the columns it needs. Relative paths are taken from `root` (default: the
    current directory). An empty list means the hull can be built.
    """
    try:
        cfg = HullConfig.from_dict(dict(cfg_dict or {}))
    except ConfigError as exc:
        return [line for line in str(exc).splitlines()[1:] if line]
    base = Path(root) if root is not None else Path.cwd()

    def missing(p: str) -> bool:
        return not (base / p).exists()

    problems = []
    if cfg.reference == "mp_bundled":
        if cfg.format != "auto":
            problems.append(f"config key 'hull.format': {cfg.format!r} describes a reference file; "
                            "'hull.reference' is mp_bundled (use auto)")
    elif cfg.reference == "alexandria":
        if not cfg.path:
            problems.append("config key 'hull.path': reference 'alexandria' needs the path to download the hull to")
        elif missing(cfg.path) and not cfg.url:
            problems.append(f"config key 'hull.path': {cfg.path} does not exist and 'hull.url' is null: "
                            "nothing to download the Alexandria hull from")
    elif missing(cfg.reference):
        problems.append(f"config key 'hull.reference': {cfg.reference} does not exist "
                        f"(a reference file, or one of {', '.join(KEYWORDS)})")
    elif cfg.file_format == "formation_table":
        try:
            cols = set(pd.read_csv(base / cfg.reference, nrows=0).columns)
        except Exception as exc:  # noqa: BLE001
            cols = set()
            problems.append(f"config key 'hull.reference': {cfg.reference} does not read as a CSV: {exc}")
        else:
            if "formation_energy_per_atom" not in cols or not cols & {"composition", "formula", "pretty_formula"}:
                problems.append(f"config key 'hull.reference': {cfg.reference} needs columns "
                                f"'formation_energy_per_atom' and 'composition' (or 'formula'); has {sorted(cols)}")
    if cfg.file_format == "formation_table" and not cfg.elemental_entries:
        problems.append(f"config key 'hull.elemental_entries': the formation-energy table {cfg.file} needs "
                        "elemental reference entries (MLIP energies are placed on it as E - sum n_i mu_i)")
    if cfg.elemental_entries and missing(cfg.elemental_entries):
        problems.append(f"config key 'hull.elemental_entries': {cfg.elemental_entries} does not exist")
    return problems
