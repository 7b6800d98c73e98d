"""Any ASE calculator as the MLIP: `mlip.backend: mymodule:make_calculator` in config.

`make_calculator(**mlip.options)` must return an ASE calculator with energy, forces
and stress. It runs one structure at a time (ASE has no batch call), so relaxations
with it run per structure with ASE FIRE. Whether its energies already carry the
MP2020 corrections cannot be guessed: the config must say (`mlip.mp2020_corrected`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crystalrl.config import import_callable

from .base import ALL_PROPERTIES, MLIP, basic_check, empty_prediction


def import_factory(spec: str) -> Callable:
    """`module:factory` -> the factory; ValueError naming `mlip.backend` when it cannot be imported."""
    return import_callable(spec, "mlip.backend", "module:factory")


class CalculatorMLIP(MLIP):
    """A user's ASE calculator behind the MLIP interface, one structure per call."""

    def __init__(self, spec: str, *, mp2020_corrected: bool | None, options: dict | None = None,
                 device: str = "cpu"):
        if mp2020_corrected is None:
            raise ValueError(f"config key 'mlip.mp2020_corrected': say whether the energies of {spec!r} "
                             "already carry the MP2020 corrections (true/false)")
        self._calc = import_factory(spec)(**(options or {}))
        self.mp2020_corrected = bool(mp2020_corrected)
        self.device = device
        self.name = spec

    def predict(self, structures: Sequence[Structure | None], batch_size: int | None = None,
                properties: Sequence[str] = ALL_PROPERTIES) -> dict:
        out = empty_prediction(structures)
        for i, s in enumerate(structures):
            out["error"][i] = basic_check(s)
            if out["error"][i]:
                continue
            atoms = AseAtomsAdaptor.get_atoms(s)
            atoms.calc = self._calc
            try:
                out["energy"][i] = atoms.get_potential_energy()
                if "forces" in properties:
                    out["forces"][i] = np.asarray(atoms.get_forces(), dtype=float)
                if "stress" in properties:
                    out["stress"][i] = np.asarray(atoms.get_stress(voigt=False), dtype=float)
            except Exception as exc:  # noqa: BLE001 - one structure must not stop the batch
                out["error"][i] = f"{self.name} failed: {type(exc).__name__}: {exc}"
        return out

    def calculator(self):
        return self._calc
