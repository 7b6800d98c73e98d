"""e_hull of a structure as generated: the one recipe the reward and the evaluation share.

As the paper: an MLIP single point of the unrelaxed sample (energy only), MP2020
corrections where the MLIP's energies need them (`MLIP.mp2020_corrected`), then the
energy above the reference hull. Samples that cannot be scored get NaN and a reason,
and never reach the MLIP:
- structurally invalid ones (atoms closer than `crystalrl.structures.MIN_DISTANCE`): their MLIP energies are
  meaningless and their neighbour lists explode (minutes per structure);
- ones with an element the hull reference lacks: no e_hull exists whatever the MLIP
  says, and some (Z > 94 for CHGNet) break the MLIP's batching.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pymatgen.core import Structure

from crystalrl.evaluate.validity import structure_validity
from crystalrl.hull import e_above_hull


def e_hull_as_generated(structures: Sequence[Structure | None], mlip, hull, *,
                        valid_struct: Sequence[bool] | None = None) -> tuple[np.ndarray, list[str]]:
    """(e_hull (n,) eV/atom, status (n,)) of each structure as generated; NaN where not scored.

    `valid_struct`: structural validity when the caller has it already (evaluation
    computes the whole validity table once); computed here otherwise.
    """
    _energy, e_hull, status = energy_and_e_hull_as_generated(structures, mlip, hull, valid_struct=valid_struct)
    return e_hull, status


def energy_and_e_hull_as_generated(structures: Sequence[Structure | None], mlip, hull, *,
                                   valid_struct: Sequence[bool] | None = None
                                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """As `e_hull_as_generated`, with the MLIP's raw total energies (n,) eV (NaN where not
    scored): a caller that relaxes the same structures next starts from them instead of
    asking the MLIP again (`crystalrl.relax.relax_structures(energy_initial=...)`)."""
    n = len(structures)
    if valid_struct is None:
        valid_struct = [s is not None and structure_validity(s)[0] for s in structures]
    covered = getattr(hull, "elements", None)
    status = ["ok"] * n
    for i, (s, ok) in enumerate(zip(structures, valid_struct)):
        if s is None:
            status[i] = "no structure"
        elif not ok:
            status[i] = "structurally invalid: not scored"
        elif covered is not None and not {el.symbol for el in s.composition} <= covered:
            lacking = sorted({el.symbol for el in s.composition} - covered)
            status[i] = f"missing reference for elements: {', '.join(lacking)}"
    idx = [i for i in range(n) if status[i] == "ok"]
    e_hull, energy = np.full(n, np.nan), np.full(n, np.nan)
    if idx:
        subset = [structures[i] for i in idx]
        pred = mlip.predict(subset, properties=("energy",))
        eh, hull_status = e_above_hull(hull, subset, pred["energy"], mlip)
        e_hull[idx], energy[idx] = eh, pred["energy"]
        for j, i in enumerate(idx):
            err = pred["error"][j] if pred.get("error") is not None else None
            status[i] = f"mlip: {err}" if err else hull_status[j]
            if err:
                energy[i] = np.nan
    return energy, e_hull, status
