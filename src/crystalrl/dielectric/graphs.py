"""Structures -> matgl PyG graphs, batching, and one batched forward pass.

matgl's own `MGLDataset` caches graphs on disk and its Lightning module computes
Cartesian positions from the lattice inside `forward`; here we keep graphs in memory
(about 1,000 small cells) and do the same position step in `forward_batch`, so the
plain torch training loop and the predictor share one code path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pymatgen.core import Structure
from torch_geometric.data import Batch, Data

from crystalrl.mlip.base import basic_check
from crystalrl.structures import parse_structure


@dataclass
class Graph:
    """One converted structure: the PyG graph and its lattice (1, 3, 3)."""

    data: Data
    lattice_133: torch.Tensor


def structure_to_graph(structure, element_types: tuple[str, ...], cutoff: float) -> Graph:
    """Convert one structure; raise ValueError with a readable reason when it can't be."""
    from matgl.ext.pymatgen import Structure2Graph

    structure = parse_structure(structure)
    if not structure.is_ordered:
        raise ValueError("disordered structure (partial occupancies)")
    unknown = sorted({el.symbol for el in structure.composition.elements} - set(element_types))
    if unknown:
        raise ValueError(f"elements {unknown} not in the model's element_types")
    if structure.volume <= 1e-6 or not np.isfinite(structure.lattice.matrix).all():
        raise ValueError("degenerate lattice")
    data, lattice, _ = Structure2Graph(element_types=element_types, cutoff=cutoff).get_graph(structure)
    if data.edge_index.shape[1] == 0:
        raise ValueError(f"no neighbour within the {cutoff} A cutoff (isolated atoms)")
    return Graph(data=data, lattice_133=lattice.reshape(1, 3, 3))


def convert_many(structures, element_types: tuple[str, ...], cutoff: float):
    """Convert a list; returns (graphs, status) where a failed item is None + its reason."""
    graphs: list[Graph | None] = []
    status: list[str] = []
    for s in structures:
        reason = basic_check(s) if s is None or isinstance(s, Structure) else None
        if reason:  # None, empty, non-finite, or far too dense: its graph would not fit in memory
            graphs.append(None)
            status.append(reason)
            continue
        try:
            graphs.append(structure_to_graph(s, element_types, cutoff))
            status.append("ok")
        except Exception as exc:  # bad input -> NaN downstream, never a crash
            graphs.append(None)
            status.append(f"graph conversion failed: {exc}")
    return graphs, status


def collate(graphs: list[Graph]) -> tuple[Batch, torch.Tensor]:
    """Batch graphs and attach Cartesian `pos` and `pbc_offshift` (as matgl's Lightning module does)."""
    batch = Batch.from_data_list([g.data for g in graphs])
    lat_b33 = torch.cat([g.lattice_133 for g in graphs], dim=0)
    node_lat = lat_b33[batch.batch]
    batch.pos = torch.einsum("ni,nij->nj", batch.frac_coords, node_lat)
    edge_lat = lat_b33[batch.batch[batch.edge_index[0]]]
    batch.pbc_offshift = torch.einsum("ei,eij->ej", batch.pbc_offset, edge_lat)
    return batch, lat_b33


def state_for(model, n: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """State input for a batch of n graphs.

    Multi-fidelity MEGNet (e.g. `MEGNet-MP-2019.4.1-BandGap-mfi`) embeds an integer
    fidelity; 0 is PBE, as in the paper's reward code (`state_attr=tensor([0])`).
    Models without a state input get None.
    """
    embedding = getattr(model, "embedding", None)
    if embedding is None or not getattr(embedding, "include_state", False):
        return None
    if getattr(embedding, "ntypes_state", None):
        return torch.zeros(n, dtype=torch.long, device=device)
    return torch.zeros(n, 2, dtype=torch.float32, device=device)  # Structure2Graph's default state


def forward_batch(model, graphs: list[Graph], device: torch.device | str = "cpu") -> torch.Tensor:
    """Model output for a list of graphs, always shaped (B, ntargets), on `device`."""
    batch, _ = collate(graphs)
    batch = batch.to(device)
    out = model(batch, state_attr=state_for(model, len(graphs), device))
    return out.reshape(len(graphs), -1)


def resolve_device(name: str | None) -> torch.device:
    """"cpu", "cuda", or "auto" (cuda when available)."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
