"""A `BatchedMLIP` as a TorchSim model, so TorchSim's batched optimizers can drive it.

TorchSim 0.3.0 is the last release for Python 3.11 (0.4+ needs 3.12), and its own
wrappers do not load with the pinned packages: `torch_sim.models.sevennet` imports
`sevenn.calculator.torch_script_type` (gone in sevenn 0.13) and `torch_sim.models.orb`
imports `orb_models.forcefield.graph_regressor` (gone in orb-models 0.5); CHGNet it
never had. One adapter serves every backend instead: each step, the SimState's
systems become the backend's graphs (`BatchedMLIP.graph`) and one `forward` call
gives all energies, forces and stresses.
"""
from __future__ import annotations

import torch
from ase import Atoms
from torch_sim.models.interface import ModelInterface

from .base import ALL_PROPERTIES, BatchedMLIP


class TorchSimModel(ModelInterface):
    """SimState -> energy (n,), forces (N, 3), stress (n, 3, 3) through one batched MLIP call.

    The optimizer state is float64 (as ASE's), whatever precision the model runs in.
    """

    def __init__(self, mlip: BatchedMLIP):
        super().__init__()
        self.mlip = mlip
        self._device = torch.device(mlip.device)
        self._dtype = torch.float64
        self._compute_forces = True
        self._compute_stress = True
        self._memory_scales_with = "n_atoms"

    def forward(self, state) -> dict[str, torch.Tensor]:
        out = self.mlip.forward([self.mlip.graph(atoms) for atoms in split_atoms(state)], ALL_PROPERTIES)
        if "stress" not in out or "forces" not in out:
            raise ValueError(f"{self.mlip!r} gives no forces or stress: it cannot relax the cell")
        return {k: out[k].to(self._device, self._dtype) for k in ("energy", "forces", "stress")}


def split_atoms(state) -> list[Atoms]:
    """The structures of a SimState as ASE Atoms (one copy from the device per step)."""
    pos_n3 = state.positions.detach().cpu().numpy()
    cell_b33 = state.row_vector_cell.detach().cpu().numpy()
    z_n = state.atomic_numbers.cpu().numpy()
    sys_n = state.system_idx.cpu().numpy()
    return [Atoms(numbers=z_n[sys_n == b], positions=pos_n3[sys_n == b], cell=cell_b33[b], pbc=True)
            for b in range(state.n_systems)]
