"""When a relaxation counts as exploded: the same checks after every step, batched or not."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from crystalrl.structures import MIN_DISTANCE


@dataclass(frozen=True)
class Guards:
    """Limits beyond which a relaxation counts as exploded (not config: physics sanity bounds)."""

    min_distance: float = MIN_DISTANCE  # Å, the structural-validity cut (crystalrl.structures)
    min_energy_per_atom: float = -50.0  # eV/atom; real solids lie above about -15
    max_volume_ratio: float = 5.0       # V/V0 outside [1/r, r]

    def check(self, atoms: Atoms, energy_per_atom: float, volume0: float) -> str | None:
        """Why the current state is unphysical, or None."""
        if not np.isfinite(energy_per_atom):
            return "energy is not finite"
        if energy_per_atom < self.min_energy_per_atom:
            return f"energy ran away ({energy_per_atom:.1f} eV/atom)"
        ratio = atoms.get_volume() / volume0
        if not (1 / self.max_volume_ratio <= ratio <= self.max_volume_ratio):
            return f"volume changed by a factor {ratio:.3g}"
        d = min_distance(atoms)
        if d < self.min_distance:
            return f"atoms collapsed ({d:.2f} Å apart)"
        return None


def min_distance(atoms: Atoms) -> float:
    """Shortest interatomic distance under periodic boundary conditions."""
    if len(atoms) < 2:
        # a single atom only sees its own periodic images
        return float(np.min(np.linalg.norm(atoms.cell.array, axis=1)))
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    return float(d.min())
