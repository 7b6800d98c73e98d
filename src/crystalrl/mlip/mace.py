"""MACE backend: a local MACE model file, loaded by mace-torch's own calculator.

MACE weights are not in any wheel (mace_mp() downloads them), so `weights_path`
names a local `.model` file. Batches are MACE's own `AtomicData` graphs joined
with its `Batch.from_data_list`, as its calculator builds them one at a time.

Installing: mace-torch 0.3.16 pins e3nn 0.4.4, while sevenn and mattersim need
e3nn >= 0.5 (and e3nn 0.4.4 imports under torch >= 2.6 only after `import mace` has
set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which mace does for the whole process; its
constants load with `torch.load`'s old defaults). In this environment mace-torch is
installed without its pins (`pip install --no-deps mace-torch==0.3.16` plus the
`mace` extra) and runs on e3nn 0.6: a MACE built and saved there gives the same
energies, forces and stresses as under e3nn 0.4.4. Model files pickled under
e3nn 0.4.4 (the published MACE-MP/MPA foundation models) do not unpickle with
e3nn >= 0.5; use those from an environment with e3nn 0.4.4 and without sevenn.

MACE-MP models are trained on uncorrected MPtrj energies; matbench-discovery
applies the MP2020 corrections to their predictions (models/mace/join_mace_preds.py
there). Hence `mp2020_corrected = False` (not checked against data: no MACE-MP
weights offline).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from ase import Atoms

from .base import ALL_PROPERTIES, BatchedMLIP


class MACEMLIP(BatchedMLIP):
    """A MACE model file; `default_dtype` "float64" (as MACE recommends for relaxation) or "float32"."""

    @staticmethod
    def weights_url(model: str | None) -> str:
        """The URL of a MACE-MP foundation model by its mace-torch name ("small", "medium-0b2", ...)."""
        from mace.calculators.foundations_models import mace_mp_urls

        if model not in mace_mp_urls:
            raise ValueError(f"config key 'mlip.model': {model!r} is not a MACE-MP model ({', '.join(mace_mp_urls)}); "
                             "give a local file as mlip.weights_path")
        return mace_mp_urls[model]

    mp2020_corrected = False

    def __init__(self, model: str | None = None, weights_path: str | None = None, device: str = "cpu",
                 default_dtype: str = "float64", head: str | None = None):
        from mace.calculators import MACECalculator

        if not weights_path:
            raise ValueError("config key 'mlip.weights_path': backend 'mace' needs a local MACE model file")
        kw = {"head": head} if head else {}
        self._calc = MACECalculator(model_paths=str(weights_path), device=device,
                                    default_dtype=default_dtype, **kw)
        self.model = self._calc.models[0]
        self.device = device
        self.name = f"mace:{model or weights_path}"

    def graph(self, atoms: Atoms):
        from mace import data
        from mace.tools import torch_tools

        c = self._calc
        keyspec = data.KeySpecification(info_keys=c.info_keys, arrays_keys={**c.arrays_keys, c.charges_key: "charges"})
        with torch_tools.default_dtype(c.default_dtype):
            config = data.config_from_atoms(atoms, key_specification=keyspec, head_name=c.head)
            return data.AtomicData.from_config(config, z_table=c.z_table, cutoff=c.r_max, heads=c.available_heads)

    def forward(self, graphs: list, properties: Sequence[str] = ALL_PROPERTIES) -> dict[str, torch.Tensor]:
        from mace.tools import torch_geometric

        batch = torch_geometric.Batch.from_data_list(graphs).to(self.device)
        out = self.model(batch.to_dict(), compute_force="forces" in properties,
                         compute_stress="stress" in properties, training=False)
        res = {"energy": out["energy"].detach().reshape(-1)}
        if out.get("forces") is not None:
            res["forces"] = out["forces"].detach()
        if out.get("stress") is not None:
            res["stress"] = out["stress"].detach()
        return res

    def calculator(self):
        return self._calc
