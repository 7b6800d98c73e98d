"""Energy above the convex hull: MP2020 corrections, then a cached per-chemsys hull.

- `mp2020`: corrections of MLIP total energies, and `needs_mp2020`, the one decision
  of whether an MLIP's energies lack them (CHGNet's do not).
- `reference`: `HullReference`, reference entries by chemical system with cached phase
  diagrams (a linear program above `MAX_PD_ELEMENTS` elements), and `e_above_hull`.
- `readers`: `load_reference` for pymatgen's bundled MP entries, entry JSON (the
  Alexandria hull), formation-energy tables and our Parquet tables.
- `config`: the `hull` section, `load_hull` (the one way to build a hull from config)
  and `check_config` (before any job runs).

pymatgen is imported where it is used: every Snakemake parse (each Slurm job too) reads
`HullConfig`, and importing pymatgen's MP2020 scheme takes 3 s on its own.
"""
from crystalrl.hull.config import HullConfig, check_config, load_hull
from crystalrl.hull.mp2020 import mp2020_compatibility, mp2020_entry, mp_hubbard_u, needs_mp2020, process_mp2020
from crystalrl.hull.readers import (FORMATS, KEYWORDS, bundled_calc_compounds_path, formation_reference,
                                    load_reference, reference_format)
from crystalrl.hull.reference import MAX_PD_ELEMENTS, HullReference, LinearHull, e_above_hull, elemental_ref_energies

__all__ = ["FORMATS", "KEYWORDS", "MAX_PD_ELEMENTS", "HullConfig", "HullReference", "LinearHull",
           "bundled_calc_compounds_path", "check_config", "e_above_hull", "elemental_ref_energies",
           "formation_reference", "load_hull", "load_reference", "mp2020_compatibility", "mp2020_entry",
           "mp_hubbard_u", "needs_mp2020", "process_mp2020", "reference_format"]
