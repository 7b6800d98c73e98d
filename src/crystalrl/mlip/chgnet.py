"""CHGNet backend: weights ship in the wheel, so tests and the demo run offline."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from ase import Atoms
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
        """CHGNet's batched model, with forces and stress from one inference backward pass.

        CHGNet's own `forward(task="efs")` takes two backward passes (positions, then
        strains), both with `create_graph=True` so that a training loss can differentiate
        the forces again. Inference needs neither: here its `_compute` gives the energy and
        one `autograd.grad` over positions and strains gives F = -dE/dx and
        sigma = (1/V) dE/d(strain), the same quantities (tests/test_mlip.py checks them
        against CHGNet's calculator) at about half the cost (bench/bench_relax.py).
        `_compute` is CHGNet's private API: chgnet is pinned, and that test fails if it changes.
        """
        from chgnet.model.model import BatchedGraph

        need_grad = "forces" in properties or "stress" in properties
        m = self.model
        graphs = [x.to(self.device) for x in graphs]
        with torch.set_grad_enabled(need_grad):
            g = BatchedGraph.from_graphs(graphs,
                                         bond_basis_expansion=m.bond_basis_expansion,
                                         angle_basis_expansion=m.angle_basis_expansion,
                                         compute_stress=need_grad)
            pred = m._compute(g, compute_force=False, compute_stress=False)
            # the released models are intensive (eV/atom); the composition model carries no forces
            per_b = pred["atoms_per_graph"] if m.is_intensive else 1
            comp_b = 0 if m.composition_model is None else m.composition_model(graphs)
            out = {"energy": ((pred["e"] + comp_b) * per_b).detach().reshape(-1)}
            if need_grad:
                n = len(graphs)
                # an isolated atom's position does not enter the energy: zero force, not an error
                grads = torch.autograd.grad((pred["e"] * per_b).sum(), [*g.atom_positions, *g.strains],
                                            allow_unused=True, materialize_grads=True)
                out["forces"] = -torch.cat(grads[:n])
                out["stress"] = torch.stack(grads[n:]) / g.volumes.reshape(-1, 1, 1)  # eV/Å^3
        return out

    def calculator(self):
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(model=self.model, use_device=self.device,
                                on_isolated_atoms="ignore")
