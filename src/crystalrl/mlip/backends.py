"""The MLIP backends `mlip.backend` can name, what each needs installed, and how to build one."""
from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass

#: `mymodule:make_calculator` (a factory of an ASE calculator, see `ase_calc.py`)
FACTORY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Backend:
    """One backend: its class, the packages it imports, and how to install them."""

    cls: str                 # "module:Class" inside crystalrl.mlip
    imports: tuple[str, ...]  # top-level packages that must import
    install: str             # what to run when they are missing
    needs_weights: bool      # no offline default: `weights_path` (or a downloadable `model`) is required
    downloads: bool = False  # the loader would download weights: the workflow fetches them beforehand


BACKENDS: dict[str, Backend] = {
    "chgnet": Backend("chgnet:CHGNetMLIP", ("chgnet",), "pip install 'crystalrl[mlip]'", False),
    "orb": Backend("orb:OrbMLIP", ("orb_models",), "pip install 'crystalrl[mlip]'", False, downloads=True),
    "sevennet": Backend("sevennet:SevenNetMLIP", ("sevenn",), "pip install 'crystalrl[mlip]'", False),
    "mace": Backend("mace:MACEMLIP", ("mace", "e3nn", "torch_ema"),
                    "pip install 'crystalrl[mlip,mace]' && pip install --no-deps mace-torch==0.3.16", True,
                    downloads=True),
    "mattersim": Backend("mattersim:MatterSimMLIP", ("mattersim", "loguru", "torch_runstats"),
                         "pip install 'crystalrl[mlip,mattersim]' && pip install --no-deps mattersim==1.2.3", False,
                         downloads=True),
}


def missing_packages(backend: str) -> list[str]:
    """Top-level packages of `backend` that are not installed (cheap: no import)."""
    return [m for m in BACKENDS[backend].imports if importlib.util.find_spec(m) is None]


def backend_class(backend: str):
    module, _, cls = BACKENDS[backend].cls.partition(":")
    return getattr(importlib.import_module(f"crystalrl.mlip.{module}"), cls)


def weights_file(section: dict) -> str | None:
    """Where the workflow keeps the downloaded weights of an `mlip` section (resources/mlip/...),
    or None when none are downloaded (weights in a wheel, a local weights_path, a factory).
    Decided from names alone: the workflow calls it while Snakemake parses."""
    backend = section.get("backend") or "orb"
    if section.get("weights_path") or backend not in BACKENDS or not BACKENDS[backend].downloads:
        return None
    return f"resources/mlip/{backend}-{section.get('model') or 'default'}.weights"
