"""CHGNet backend: weights ship in the wheel, so tests and the demo run offline."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import units
from pymatgen.core import Structure

from .base import ALL_PROPERTIES, MLIP, convert_graphs, run_batches


class CHGNetMLIP(MLIP):
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

    def predict(self, structures: Sequence[Structure | None], batch_size: int = 32,
                properties: Sequence[str] = ALL_PROPERTIES) -> dict:
        """Batched CHGNet single points via `predict_graph`; CHGNet's e is eV/atom."""
        task = "e" + ("f" if "forces" in properties else "") + ("s" if "stress" in properties else "")
        task = "efs" if task == "es" else task  # CHGNet has no "es" task
        out, graphs = convert_graphs(structures, self.model.graph_converter)

        def _run(batch: list[int]) -> None:
            preds = self.model.predict_graph([graphs[i] for i in batch], task=task,
                                             batch_size=len(batch))
            if isinstance(preds, dict):
                preds = [preds]
            for i, p in zip(batch, preds):
                n = len(structures[i])
                out["energy"][i] = float(p["e"]) * n
                if "f" in p:
                    out["forces"][i] = np.asarray(p["f"], dtype=float).reshape(n, 3)
                if "s" in p:
                    out["stress"][i] = np.asarray(p["s"], dtype=float).reshape(3, 3) * units.GPa

        run_batches(sorted(graphs), batch_size, _run, out["error"], self.name)
        return out

    def calculator(self):
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(model=self.model, use_device=self.device,
                                on_isolated_atoms="ignore")
