"""SevenNet backend: the checkpoints inside the sevenn wheel load offline, by name.

sevenn 0.13 ships 7net-0 (11Jul2024, also "7net-0_11Jul2024"), 7net-0_22May2024,
7net-l3i5 and 7net-mf-0 (multi-fidelity: pass `modal`); other names (7net-omni,
7net-mf-ompa, 7net-omat) download on first use. A local checkpoint goes in
`weights_path`.

SevenNet is trained on the uncorrected MPtrj energies: matbench-discovery applies
the MP2020 corrections to its predictions (models/sevennet/join_7net_preds.py
there), and on MP's NaCl, GaTe and NaS 7net-0 gives MP's raw energy, not the
corrected one (tests/test_mlip.py). Hence `mp2020_corrected = False`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from ase import Atoms

from .base import ALL_PROPERTIES, BatchedMLIP, voigt6_to_3x3


class SevenNetMLIP(BatchedMLIP):
    """A SevenNet checkpoint loaded by sevenn's own calculator; batches run through the same model."""

    mp2020_corrected = False

    def __init__(self, model: str | None = None, weights_path: str | None = None,
                 device: str = "cpu", modal: str | None = None):
        import warnings

        from sevenn.calculator import SevenNetCalculator

        with warnings.catch_warnings():  # "no tensor product accelerator" on every load
            warnings.simplefilter("ignore", UserWarning)
            self._calc = SevenNetCalculator(str(weights_path or model or "7net-0"), device=device, modal=modal)
        self.model = self._calc.model
        self.cutoff = float(self._calc.cutoff)
        self.modal = self._calc.modal
        self.device = device
        self.name = str(model or weights_path or "7net-0")

    def graph(self, atoms: Atoms):
        import sevenn._keys as key
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        data = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, self.cutoff, with_shift=True))
        if self.modal:
            data[key.DATA_MODALITY] = self.modal
        return data

    def forward(self, graphs: list, properties: Sequence[str] = ALL_PROPERTIES) -> dict[str, torch.Tensor]:
        """sevenn's batched mode (torch_geometric Collater), as its own TorchSim wrapper runs it;
        forces and stress come from one autograd pass whatever `properties` asks."""
        import sevenn._keys as key
        from torch_geometric.loader.dataloader import Collater

        batch = Collater([], follow_batch=None, exclude_keys=None)(graphs).to(self.device)
        self.model.set_is_batch_data(True)
        try:
            out = self.model(batch)
        finally:
            self.model.set_is_batch_data(False)  # the shared ASE calculator runs unbatched
        # sevenn's Voigt order is xx yy zz xy yz zx with the opposite sign of ASE's stress
        s6 = -out[key.PRED_STRESS].detach()[:, [0, 1, 2, 4, 5, 3]]
        return {"energy": out[key.PRED_TOTAL_ENERGY].detach().reshape(-1),
                "forces": out[key.PRED_FORCE].detach(), "stress": voigt6_to_3x3(s6)}

    def calculator(self):
        return self._calc
