"""CHGNet backend: weights ship in the wheel, so tests and the demo run offline."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from ase import Atoms, units
from pymatgen.core import Lattice, Structure

from .base import ALL_PROPERTIES, BatchedMLIP


class CHGNetMLIP(BatchedMLIP):
    """CHGNet (Deng et al. 2023); `model` is a bundled version ("0.3.0", "0.2.0", "r2scan").

    CHGNet is trained on MPtrj energies that already carry the MP2020
    corrections: on MP's NaCl, GaTe and NaS it gives MP's raw energy plus the
    MP2020 correction to ~0.03 eV/atom (tests/test_relax.py). Hence
    `mp2020_corrected = True`: the hull must not correct its energies again.
    """

    mp2020_corrected = True

    def __init__(self, model: str | None = None, weights_path: str | None = None,
                 device: str = "cpu"):
        from chgnet.model import CHGNet

        if weights_path:
            self.model = CHGNet.from_file(str(weights_path))
        else:
            self.model = CHGNet.load(model_name=model or "0.3.0", use_device=device, verbose=False)
        self.device = device
        self.model = self.model.to(device).eval()
        # Generated samples may hold isolated atoms; CHGNet still gives an energy.
        self.model.graph_converter.set_isolated_atom_response("ignore")
        self.name = f"chgnet-{self.model.version or 'custom'}"
        # r2SCAN energies are not MP2020/GGA energies at all; do not pretend they are
        self.mp2020_corrected = model != "r2scan"

    def graph(self, atoms: Atoms):
        s = Structure(Lattice(atoms.cell.array), atoms.numbers, atoms.positions, coords_are_cartesian=True)
        return self.model.graph_converter(s)

    def forward(self, graphs: list, properties: Sequence[str] = ALL_PROPERTIES) -> dict[str, torch.Tensor]:
        """CHGNet's own batched forward; its "e" is eV/atom and its "s" GPa."""
        task = "e" + ("f" if "forces" in properties else "") + ("s" if "stress" in properties else "")
        task = "efs" if task == "es" else task  # CHGNet has no "es" task
        with torch.set_grad_enabled(task != "e"):
            pred = self.model([g.to(self.device) for g in graphs], task=task)
        n_atoms = torch.tensor([g.atomic_number.shape[0] for g in graphs], device=pred["e"].device)
        out = {"energy": pred["e"].detach().reshape(-1) * n_atoms}
        if "f" in pred:
            out["forces"] = torch.cat([f.detach() for f in pred["f"]])
        if "s" in pred:
            out["stress"] = torch.stack([s.detach() for s in pred["s"]]) * units.GPa
        return out

    def calculator(self):
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(model=self.model, use_device=self.device,
                                on_isolated_atoms="ignore")
