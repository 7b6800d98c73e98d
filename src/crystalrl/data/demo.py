"""The offline demo data set: real prototype crystals that ship inside pymatgen.

What it is: the structures of pymatgen's `AFLOW_PROTOTYPE_LIBRARY` (the AFLOW
Library of Crystallographic Prototypes, Mehl et al. 2017 / Hicks et al. 2019, as
bundled in `pymatgen/analysis/prototypes`), keeping those with at most 20 atoms in
the stored cell: **250 of the 288 prototypes, 90 space groups (spglib, symprec
0.1), 67 elements**, all ordered. Each prototype is decorated with the elements of
its archetype compound (e.g. `AB_cF8_225_a_b` is NaCl), so these are genuine
crystal structures, not random ones. No energies: `e_above_hull` is NaN.

Why: the demo run must go through the whole DAG on a machine that only reaches the
package index, so its data must install with the dependencies.

Ids are `aflow:<AFLOW label>`; nine labels occur twice in the library (different
archetypes of one prototype), the second occurrence gets `aflow:<label>.2`. The
order is the library's, so the set and its ids are deterministic.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

from crystalrl.data.sources import Row

SOURCE = "demo:aflow_prototypes"
DEMO_MAX_ATOMS = 20


def demo_rows(max_atoms: int = DEMO_MAX_ATOMS) -> Iterator[Row]:
    """Yield the demo set as `Row`s (structure = pymatgen `Structure`)."""
    from pymatgen.analysis.prototypes import AFLOW_PROTOTYPE_LIBRARY  # loads a bundled json

    seen: Counter[str] = Counter()
    for i, proto in enumerate(AFLOW_PROTOTYPE_LIBRARY):
        label = proto["tags"]["aflow"]
        seen[label] += 1
        structure = proto["snl"].structure
        if len(structure) > max_atoms:
            continue
        rid = f"aflow:{label}" if seen[label] == 1 else f"aflow:{label}.{seen[label]}"
        yield Row(rid, SOURCE, structure, math.nan,
                  f"pymatgen AFLOW_PROTOTYPE_LIBRARY entry {i} ({label})")
