"""Orb backend (the paper's reward model): Orb v2 / v3 through orb-models.

Weights are not in the wheel: pass `weights_path` (a local file), or leave it
None where the internet is reachable and orb-models' own loader downloads the
checkpoint. Batching concatenates per-structure graphs with orb's
`batch_graphs`, so one forward pass serves a whole batch.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase.stress import voigt_6_to_full_3x3_stress
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from .base import ALL_PROPERTIES, MLIP, convert_graphs, run_batches


def orb_model_names() -> list[str]:
    from orb_models.forcefield.pretrained import ORB_PRETRAINED_MODELS

    return sorted(ORB_PRETRAINED_MODELS)


class OrbMLIP(MLIP):
    """An Orb model by its orb-models name ("orb-v2", "orb-v3-conservative-inf-mpa", ...)."""

    def __init__(self, model: str = "orb-v2", weights_path: str | None = None,
                 device: str = "cpu", precision: str = "float32-high", compile: bool | None = None):
        from orb_models.forcefield.pretrained import ORB_PRETRAINED_MODELS

        if model not in ORB_PRETRAINED_MODELS:
            raise ValueError(f"unknown Orb model {model!r}; known: {orb_model_names()}")
        kw = {"device": device, "precision": precision,
              # torch.compile is slow to warm up and fragile on CPU
              "compile": (device != "cpu") if compile is None else compile}
        if weights_path:
            kw["weights_path"] = str(weights_path)
        self.model = ORB_PRETRAINED_MODELS[model](**kw)
        self.model.eval()
        self.device = device
        self.name = model
        self.conservative = hasattr(self.model, "grad_forces_name")
        if self.conservative:
            self.forces_key = self.model.grad_forces_name
            self.stress_key = self.model.grad_stress_name if self.model.has_stress else None
        else:
            self.forces_key = "forces"
            self.stress_key = "stress" if "stress" in self.model.heads else None

    def _graph(self, s: Structure):
        from orb_models.forcefield.atomic_system import ase_atoms_to_atom_graphs

        atoms = AseAtomsAdaptor.get_atoms(s)
        return ase_atoms_to_atom_graphs(atoms, system_config=self.model.system_config,
                                        device=torch.device(self.device))

    def predict(self, structures: Sequence[Structure | None], batch_size: int = 32,
                properties: Sequence[str] = ALL_PROPERTIES) -> dict:
        """Batched Orb single points: graphs are concatenated and run in one pass.

        Orb predicts all properties in the same pass, so `properties` saves nothing.
        """
        from orb_models.forcefield.base import batch_graphs

        out, graphs = convert_graphs(structures, self._graph)

        def _run(batch: list[int]) -> None:
            g = batch_graphs([graphs[i] for i in batch]).to(self.device)
            ctx = torch.enable_grad() if self.conservative else torch.no_grad()
            with ctx:
                pred = self.model.predict(g)
            energy = pred["energy"].detach().cpu().double().numpy().reshape(-1)
            forces = pred[self.forces_key].detach().cpu().double().numpy()
            stress = (pred[self.stress_key].detach().cpu().double().numpy().reshape(len(batch), -1)
                      if self.stress_key else np.full((len(batch), 6), np.nan))
            n_node = g.n_node.cpu().numpy()
            offsets = np.concatenate([[0], np.cumsum(n_node)])
            for j, i in enumerate(batch):
                out["energy"][i] = energy[j]
                out["forces"][i] = forces[offsets[j]:offsets[j + 1]]
                out["stress"][i] = voigt_6_to_full_3x3_stress(stress[j])

        run_batches(sorted(graphs), batch_size, _run, out["error"], self.name)
        return out

    def calculator(self):
        from orb_models.forcefield.calculator import ORBCalculator

        return ORBCalculator(self.model, device=self.device)


__all__ = ["OrbMLIP", "orb_model_names"]
