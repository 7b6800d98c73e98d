"""The one interface every MLIP backend implements.

Rewards and relaxation only need three things from an interatomic potential:
batched single points (energy, forces, stress), an ASE calculator for dynamics,
and a name for logs. A structure the backend cannot handle (isolated atoms,
empty cell, NaN coordinates) must come back as NaN, never sink the whole batch.

Backends whose model takes many structures in one call subclass `BatchedMLIP`:
they say how one structure becomes a model input (`graph`) and how a list of
inputs becomes energies, forces and stresses (`forward`). `predict` and the
batched relaxation (`crystalrl.relax.batched`) both run on those two methods, so
single points and relaxation forces come from the same code.
"""
from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crystalrl.config import section
from crystalrl.logs import Progress

log = logging.getLogger(__name__)

ALL_PROPERTIES = ("energy", "forces", "stress")


def empty_prediction(structures: Sequence[Structure | None]) -> dict:
    """NaN-filled result arrays; backends fill in the rows that succeed.

    energy (n,) total eV; forces list of (n_i, 3) eV/Å; stress (n, 3, 3) eV/Å^3
    in ASE's sign convention (positive = tensile).
    """
    n = len(structures)
    return {
        "energy": np.full(n, np.nan),
        "forces": [np.full((len(s) if s is not None else 0, 3), np.nan) for s in structures],
        "stress": np.full((n, 3, 3), np.nan),
        "error": [None] * n,
    }


def convert_graphs(structures: Sequence[Structure | None], convert: Callable) -> tuple[dict, dict[int, object]]:
    """An empty prediction and the backend graph of every structure that converts.

    A structure that fails `basic_check` or the conversion gets its reason in
    `out["error"]` and no graph, so the batch goes on without it.
    """
    out = empty_prediction(structures)
    graphs: dict[int, object] = {}
    for i, s in enumerate(structures):
        reason = basic_check(s)
        if reason:
            out["error"][i] = reason
            continue
        try:
            graphs[i] = convert(s)
        except Exception as exc:  # noqa: BLE001 - one structure must not stop the batch
            out["error"][i] = f"graph construction failed: {type(exc).__name__}: {exc}"
    return out, graphs


def run_batches(idx: Sequence[int], batch_size: int, fn: Callable[[list[int]], None],
                errors: list, name: str) -> None:
    """Call `fn(batch_indices)` per batch; on failure retry one by one.

    A batch that raises (one pathological graph) is split into single
    structures so the rest of the batch still gets its numbers; the failing
    structure keeps its NaNs and an error message.
    """
    idx = list(idx)
    progress = Progress(f"{name} single points", len(idx), log)
    for start in range(0, len(idx), max(1, batch_size)):
        batch = idx[start:start + batch_size]
        try:
            fn(batch)
        except Exception as exc:  # noqa: BLE001
            if len(batch) == 1:
                errors[batch[0]] = f"{name} failed: {type(exc).__name__}: {exc}"
            else:
                log.warning("%s batch of %d failed (%s); retrying one by one", name, len(batch), exc)
                for i in batch:
                    try:
                        fn([i])
                    except Exception as exc1:  # noqa: BLE001
                        errors[i] = f"{name} failed: {type(exc1).__name__}: {exc1}"
        progress.update(len(batch))


#: Å^3 per atom below which a structure is not sent to an MLIP. Diamond, the densest
#: common solid, has 5.7 (the 1,980 Alexandria samples: 7.1 and up); weak generators
#: emit cells of 1-2 Å^3/atom whose neighbour lists hold thousands of atoms each and
#: whose graphs took CHGNet past 24 GB of memory in one batch.
MIN_VOLUME_PER_ATOM = 2.5


def basic_check(s: Structure | None) -> str | None:
    """Reason a structure cannot be evaluated at all, or None."""
    if s is None:
        return "no structure"
    if len(s) == 0:
        return "empty structure"
    if not np.all(np.isfinite(s.cart_coords)) or not np.all(np.isfinite(s.lattice.matrix)):
        return "non-finite coordinates or lattice"
    if not s.volume > 1e-6:
        return f"degenerate cell (volume {s.volume:.3g} Å^3)"
    if s.volume / len(s) < MIN_VOLUME_PER_ATOM:
        return (f"denser than any solid ({s.volume / len(s):.2f} Å^3/atom < {MIN_VOLUME_PER_ATOM}): "
                "not sent to the MLIP")
    return None


class MLIP(abc.ABC):
    """A universal interatomic potential behind one interface."""

    name: str = "mlip"
    #: True when the model was trained on MP2020-corrected energies (so the hull
    #: must not apply the corrections again); False for raw-DFT-energy models.
    mp2020_corrected: bool = False
    #: True when many structures go through the model in one call (`BatchedMLIP`);
    #: relaxation then runs batched, else one structure at a time with ASE.
    batched: bool = False
    device: str = "cpu"
    #: Structures per model call for single points: the config's `mlip.batch_size`, which
    #: `load_mlip` sets; the MLIP carries it, so callers pass none.
    batch_size: int = section("mlip")["batch_size"]

    @abc.abstractmethod
    def predict(self, structures: Sequence[Structure | None], batch_size: int | None = None,
                properties: Sequence[str] = ALL_PROPERTIES) -> dict:
        """Batched single points: dict(energy (n,) eV, forces list[(n_i,3)], stress (n,3,3) eV/Å^3, error list).

        `batch_size`: structures per model call (None: `self.batch_size`).

        `properties` may drop "forces"/"stress" (left NaN) where the backend
        can then skip work (CHGNet skips the backward pass for energy only).
        """

    @abc.abstractmethod
    def calculator(self) -> Calculator:
        """An ASE calculator sharing this instance's model."""

    def energies(self, structures: Sequence[Structure | None], batch_size: int | None = None) -> np.ndarray:
        """Total energies (eV) only; NaN where a structure failed."""
        return self.predict(structures, batch_size=batch_size, properties=("energy",))["energy"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class BatchedMLIP(MLIP):
    """An MLIP whose model evaluates a list of structures in one call."""

    batched = True

    @abc.abstractmethod
    def graph(self, atoms: Atoms):
        """The model input of one structure (its neighbour graph), built once per structure and step."""

    @abc.abstractmethod
    def forward(self, graphs: list, properties: Sequence[str] = ALL_PROPERTIES) -> dict[str, torch.Tensor]:
        """One model call on `graphs`: energy (n,) eV, forces (sum n_i, 3) eV/Å, stress (n, 3, 3)
        eV/Å^3 in ASE's sign convention, detached, on the model's device. Keys outside
        `properties` may be missing."""

    def predict(self, structures: Sequence[Structure | None], batch_size: int | None = None,
                properties: Sequence[str] = ALL_PROPERTIES) -> dict:
        out, graphs = convert_graphs(structures, lambda s: self.graph(AseAtomsAdaptor.get_atoms(s)))

        def _run(batch: list[int]) -> None:
            res = {k: v.detach().double().cpu().numpy() for k, v in self.forward([graphs[i] for i in batch],
                                                                                    properties).items()}
            offsets = np.cumsum([0] + [len(structures[i]) for i in batch])
            for j, i in enumerate(batch):
                out["energy"][i] = res["energy"][j]
                if "forces" in res:
                    out["forces"][i] = res["forces"][offsets[j]:offsets[j + 1]]
                if "stress" in res:
                    out["stress"][i] = res["stress"][j]

        run_batches(sorted(graphs), batch_size or self.batch_size, _run, out["error"], self.name)
        return out


def voigt6_to_3x3(v_b6: torch.Tensor) -> torch.Tensor:
    """ASE-order Voigt stresses (xx, yy, zz, yz, xz, xy) (b, 6) -> full tensors (b, 3, 3)."""
    idx = torch.tensor([[0, 5, 4], [5, 1, 3], [4, 3, 2]], device=v_b6.device)
    return v_b6[:, idx]
