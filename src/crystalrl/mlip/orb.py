"""Orb backend (the paper's reward model): Orb v2 / v3 through orb-models.

Weights are not in the wheel: pass `weights_path` (a local file), or leave it
None where the internet is reachable and orb-models' own loader downloads the
checkpoint. Batching concatenates per-structure graphs with orb's
`batch_graphs`, so one forward pass serves a whole batch.

Orb's energies are raw DFT energies: matbench-discovery applies the MP2020
corrections to Orb's predictions before placing them on the hull
(models/orb/join_orb_preds.py there), so `mp2020_corrected` stays False. Not
checked against data here: no Orb weights can be had offline.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from ase import Atoms

from .base import ALL_PROPERTIES, BatchedMLIP, voigt6_to_3x3


def orb_model_names() -> list[str]:
    from orb_models.forcefield.pretrained import ORB_PRETRAINED_MODELS

    return sorted(ORB_PRETRAINED_MODELS)


class OrbMLIP(BatchedMLIP):
    """An Orb model by its orb-models name ("orb-v2", "orb-v3-conservative-inf-mpa", ...)."""

    @staticmethod
    def weights_url(model: str | None) -> str:
        """The URL orb-models itself downloads `model`'s weights from (its loader's default)."""
        import inspect

        from orb_models.forcefield.pretrained import ORB_PRETRAINED_MODELS

        model = model or "orb-v2"
        if model not in ORB_PRETRAINED_MODELS:
            raise ValueError(f"unknown Orb model {model!r}; known: {orb_model_names()}")
        return inspect.signature(ORB_PRETRAINED_MODELS[model]).parameters["weights_path"].default

    def __init__(self, model: str | None = None, weights_path: str | None = None,
                 device: str = "cpu", precision: str = "float32-high", compile: bool | None = None):
        from orb_models.forcefield.pretrained import ORB_PRETRAINED_MODELS

        model = model or "orb-v2"
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

    def graph(self, atoms: Atoms):
        from orb_models.forcefield.atomic_system import ase_atoms_to_atom_graphs

        return ase_atoms_to_atom_graphs(atoms, system_config=self.model.system_config,
                                        device=torch.device(self.device))

    def forward(self, graphs: list, properties: Sequence[str] = ALL_PROPERTIES) -> dict[str, torch.Tensor]:
        """Orb graphs concatenated (`batch_graphs`) and run in one pass; Orb predicts all
        properties in that pass, so `properties` saves nothing."""
        from orb_models.forcefield.base import batch_graphs

        g = batch_graphs(graphs).to(self.device)
        with torch.enable_grad() if self.conservative else torch.no_grad():
            pred = self.model.predict(g)
        out = {"energy": pred["energy"].detach().reshape(-1),
               "forces": pred[self.forces_key].detach()}
        if self.stress_key:
            out["stress"] = voigt6_to_3x3(pred[self.stress_key].detach().reshape(len(graphs), 6))
        return out

    def calculator(self):
        from orb_models.forcefield.calculator import ORBCalculator

        return ORBCalculator(self.model, device=self.device)


__all__ = ["OrbMLIP", "orb_model_names"]
