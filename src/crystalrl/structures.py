"""Structure parsing: the one home for turning stored crystals back into pymatgen Structures.

Workflow artifacts hold crystals as CIF text (samples, relaxed samples, curated data);
raw sources also hold `Structure.as_dict()` dicts or their `str()`/JSON form. A
crystal that does not parse never stops a batch: `parse_many` gives None and a
reason for it. pymatgen's CIF warnings ("coordinates rounded", ...) are silenced:
they would flood the logs for millions of rows.
"""
from __future__ import annotations

import ast
import json
import warnings
from collections.abc import Sequence
from typing import Any

from pymatgen.core import Structure

from crystalrl.config import section

#: Å: atoms closer than this make a structure broken (CDVAE's and CrystalFormer's validity cut).
#: The one home of the number: the schema's `evaluate.min_distance` default, read by curation,
#: the relaxation guards, the evaluation and the rewards alike.
MIN_DISTANCE: float = section("evaluate")["min_distance"]


def parse_structure(obj: Any) -> Structure:
    """CIF text, a Structure dict (or its str/JSON form), an ASE Atoms or a Structure -> Structure.

    Raises ValueError (or pymatgen's error) with a short reason when it cannot.
    `ast.literal_eval`, never `eval`: the dict form comes from untrusted CSVs.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(obj, Structure):
            return obj
        if isinstance(obj, dict):
            return Structure.from_dict(obj)
        if type(obj).__name__ == "Atoms":
            from pymatgen.io.ase import AseAtomsAdaptor

            return AseAtomsAdaptor.get_structure(obj)
        if not isinstance(obj, str) or not obj.strip():
            raise ValueError(f"empty or non-text structure field ({type(obj).__name__})")
        text = obj.strip()
        if text.startswith("{"):
            try:
                d = json.loads(text)
            except json.JSONDecodeError:
                d = ast.literal_eval(text)
            return Structure.from_dict(d)
        s = Structure.from_str(text, fmt="cif")
        if len(s) == 0:
            raise ValueError("CIF holds no atoms")
        return s


def unknown_elements(structure: Structure, max_z: int = 118) -> list[str]:
    """Symbols of the structure's species that are no element H..(Z = max_z): pymatgen reads an
    unknown symbol in a CIF (`Xx`, `X`) as a DummySpecies instead of failing."""
    from pymatgen.core import Element

    return [str(getattr(sp, "symbol", sp)) for sp in structure.composition.elements
            if not isinstance(sp, Element) or not 1 <= sp.Z <= max_z]


def parse_many(objs: Sequence[Any], ids: Sequence | None = None) -> tuple[list[Structure | None], list[str | None]]:
    """Parse each crystal (CIF text, dict, Structure; None or NaN for samples that never
    decoded) -> (structures, reasons): None and a reason where it fails, reason None where
    it works. With `ids` each reason names its sample."""
    structures: list[Structure | None] = []
    reasons: list[str | None] = []
    for i, obj in enumerate(objs):
        where = f"sample {ids[i]!r}: " if ids is not None else ""
        if obj is None or (isinstance(obj, float) and obj != obj) or (isinstance(obj, str) and not obj.strip()):
            structures.append(None)
            reasons.append(f"{where}no CIF (sample was not decoded)")
            continue
        try:
            structures.append(parse_structure(obj))
            reasons.append(None)
        except Exception as exc:  # noqa: BLE001 - one bad crystal must not stop the batch
            structures.append(None)
            reasons.append(f"{where}CIF does not parse: {type(exc).__name__}: {exc}")
    return structures, reasons
