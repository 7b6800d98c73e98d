"""MatterSim backend: a MatterSim checkpoint (M3GNet) loaded by mattersim's own `Potential`.

Weights are not in the wheel: `weights_path` names a local checkpoint, or `model`
one of mattersim's names (mattersim-v1.0.0-1M / -5M), which its loader downloads.
Batches are mattersim's own graphs (`GraphConvertor`) joined as its data loader
joins them and run through `Potential.forward`.

Installing: mattersim 1.2.3 requires torchvision, torchaudio, atomate2, mp-api,
phonopy, wandb and Azure clients, none of which inference imports; it is installed
without them (`pip install --no-deps mattersim==1.2.3` plus the `mattersim` extra).

MatterSim's energies are raw PBE(+U) energies: matbench-discovery applies the MP2020
corrections to them (models/mattersim/test_mattersim_discovery.py there). Hence
`mp2020_corrected = False` (not checked against data: no MatterSim weights offline).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from ase import Atoms, units

from .base import ALL_PROPERTIES, BatchedMLIP


class MatterSimMLIP(BatchedMLIP):
    mp2020_corrected = False

    @staticmethod
    def weights_url(model: str | None) -> str:
        """The URL MatterSim's own loader downloads a named checkpoint from (`download_checkpoint`)."""
        name = model or "mattersim-v1.0.0-1M"
        return "https://raw.githubusercontent.com/microsoft/mattersim/main/pretrained_models/" + (
            name if name.endswith(".pth") else f"{name}.pth")

    def __init__(self, model: str | None = None, weights_path: str | None = None, device: str = "cpu"):
        from mattersim.datasets.utils.convertor import GraphConvertor
        from mattersim.forcefield.potential import Potential

        self.potential = Potential.from_checkpoint(str(weights_path or model or "mattersim-v1.0.0-1M"),
                                                   device=device, load_training_state=False)
        self.potential.model.eval()
        args = self.potential.model.model_args
        self._convertor = GraphConvertor("m3gnet", args["cutoff"], True, args["threebody_cutoff"])
        self.device = device
        self.name = f"mattersim:{model or weights_path}"

    def graph(self, atoms: Atoms):
        g = self._convertor.convert(atoms.copy(), None, None, None)
        if g is None:
            raise ValueError("mattersim could not build the graph")
        return g

    def forward(self, graphs: list, properties: Sequence[str] = ALL_PROPERTIES) -> dict[str, torch.Tensor]:
        from mattersim.forcefield.potential import batch_to_dict
        from torch_geometric.data import Batch

        inputs = batch_to_dict(Batch.from_data_list(graphs), device=self.device)
        forces, stress = "forces" in properties, "stress" in properties
        with torch.set_grad_enabled(forces or stress):
            out = self.potential.forward(inputs, include_forces=forces or stress, include_stresses=stress)
        res = {"energy": out["total_energy"].detach().reshape(-1)}
        if "forces" in out:
            res["forces"] = out["forces"].detach()
        if "stresses" in out:
            res["stress"] = out["stresses"].detach() * units.GPa  # mattersim's stresses are GPa
        return res

    def calculator(self):
        from mattersim.forcefield import MatterSimCalculator

        return MatterSimCalculator(potential=self.potential, device=self.device)
