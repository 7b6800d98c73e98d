"""MP2020 corrections of MLIP total energies: the one home of "does this energy need them".

MLIP energies are "MP-compatible" only after pymatgen's MP2020 scheme (anion,
GGA/GGA+U mixing corrections). `mp2020_entry` builds the entry the scheme expects:
U values chosen exactly as `MPRelaxSet` would (its LDAUU table keyed by the most
electronegative element), which is also what the scheme checks. MLIPs trained on
MP2020-corrected energies (CHGNet) must not be corrected again: `needs_mp2020`.
"""
from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pymatgen.core import Composition, Structure
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
    from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

log = logging.getLogger(__name__)

_COMPAT: MaterialsProject2020Compatibility | None = None


def mp2020_compatibility() -> MaterialsProject2020Compatibility:
    """One shared MP2020 scheme; POTCARs are never available for MLIP energies."""
    global _COMPAT
    if _COMPAT is None:
        from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

        _COMPAT = MaterialsProject2020Compatibility(check_potcar=False)
    return _COMPAT



def needs_mp2020(mlip) -> bool:
    """Whether the total energies of `mlip` still need the MP2020 corrections: the one
    decision, read from the MLIP's own `mp2020_corrected` (None or no MLIP: they do)."""
    return not bool(getattr(mlip, "mp2020_corrected", False))


# ---------------------------------------------------------------- MP2020 entries
def mp_hubbard_u(composition: Composition) -> dict[str, float]:
    """The non-zero U values MP (MPRelaxSet) uses for this composition.

    MPRelaxSet's LDAUU table is keyed by the most electronegative element (only
    O and F have entries), and MP2020Compatibility checks U against that same
    table, so deriving U from it keeps both in agreement by construction.
    """
    from pymatgen.io.vasp.sets import MPRelaxSet

    table = MPRelaxSet.CONFIG["INCAR"]["LDAUU"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # noble gases have no Pauling X (NaN), as in pymatgen
        els = sorted((el for el in composition.elements if composition[el] > 0), key=lambda el: el.X)
    if not els:
        return {}
    per_el = table.get(els[-1].symbol, {})
    return {el.symbol: float(per_el[el.symbol]) for el in els if float(per_el.get(el.symbol, 0)) != 0}


def mp2020_entry(structure: Structure, energy_total: float, *, entry_id: str | None = None,
                 process: bool = True) -> ComputedStructureEntry:
    """A ComputedStructureEntry for an MLIP total energy (eV), MP2020-corrected.

    Raises `ValueError` when the MP2020 scheme rejects the entry (its message says
    why), so a caller can record the reason and go on.
    """
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    hubbards = mp_hubbard_u(structure.composition)
    params = {"run_type": "GGA+U" if hubbards else "GGA", "is_hubbard": bool(hubbards),
              "hubbards": hubbards, "software": "vasp"}
    entry = ComputedStructureEntry(structure, float(energy_total), parameters=params,
                                   entry_id=entry_id)
    if not process:
        return entry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "failed to guess oxidation states" for odd samples
        out = mp2020_compatibility().process_entry(entry)
    if out is None:
        raise ValueError(f"MP2020 compatibility rejected {structure.composition.reduced_formula}")
    return out


def process_mp2020(entries: list[ComputedEntry], source: str) -> list[ComputedEntry]:
    """MP2020-process entries that carry MP run parameters; keep others as given.

    pymatgen cleans previous adjustments before re-applying them, so processing an
    already-corrected MP entry is idempotent. Entries without `run_type` (e.g.
    bare energies) cannot be checked and are taken as given.
    """
    todo = [e for e in entries if e.parameters.get("run_type") in ("GGA", "GGA+U")]
    rest = [e for e in entries if e.parameters.get("run_type") not in ("GGA", "GGA+U")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = mp2020_compatibility().process_entries(todo, verbose=False)
    if len(done) < len(todo):
        log.warning("%s: MP2020 compatibility dropped %d of %d entries", source,
                    len(todo) - len(done), len(todo))
    return list(done) + rest
