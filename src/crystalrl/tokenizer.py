"""Crystal structure <-> CrystalFormer tokens (G, L, XYZ, A, W).

A crystal is written as its space group G, a normalised lattice L, and one
(Wyckoff letter W, element A, representative coordinates XYZ) triple per
symmetry-inequivalent site. The recipe reproduces the public CrystalFormer code
number for number (design section 1.1): pymatgen's refined conventional cell at
`symprec`, pyxtal's Wyckoff assignment and orbit representative, lengths divided by
N^(1/3) (N = atoms in the conventional cell), angles in radians, sites sorted by W
then x, y, z, pads 0. Decoding (design section 1.3) rebuilds the full orbit of each
site from the Wyckoff tables in `crystalrl.wyckoff`.
"""
from __future__ import annotations

import contextlib
import functools
import io
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from crystalrl import wyckoff as wy

MAX_Z = 118  # A tokens 1..118 (H..Og); 0 is the pad


class TokenizeError(ValueError):
    """A structure that cannot be written as tokens (or tokens that are not a crystal)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Tokens:
    """One crystal as tokens. Arrays are padded to n_max (A = W = 0, XYZ = 0 on pads)."""

    G: int
    L: np.ndarray  # (6,) a, b, c / N^(1/3) and alpha, beta, gamma in radians
    XYZ: np.ndarray  # (n_max, 3) representative fractional coordinates in [0, 1)
    A: np.ndarray  # (n_max,) atomic numbers
    W: np.ndarray  # (n_max,) Wyckoff letter indices (a=1 ... A=27)
    n_atoms: int  # atoms in the conventional cell (sum of multiplicities)

    @property
    def n_sites(self) -> int:
        return int((self.A > 0).sum())


# ----------------------------------------------------------------------------- pyxtal speed
@functools.cache
def _pyxtal_fast_paths() -> None:
    """Make pyxtal's from_seed ~2x faster without changing any result.

    pyxtal 1.1.5 rebuilds two things on every call: `Hall()` scans a 530-row pandas
    table one cell at a time (~0.1 s per structure, 60% of from_seed), and
    `get_symbol_and_number` re-parses symbols.json (~10 ms per site). We give
    `HALL_TABLE` the same `table[column][row]` indexing as a dict of lists, and
    memoise the read-only JSON loads of pyxtal.symmetry.
    """
    import pyxtal.symmetry as ps

    if isinstance(ps.HALL_TABLE, pd.DataFrame):
        ps.HALL_TABLE = {c: ps.HALL_TABLE[c].tolist() for c in ps.HALL_TABLE.columns}
    if not hasattr(ps.loadfn, "cache_info"):
        ps.loadfn = functools.cache(ps.loadfn)


# ----------------------------------------------------------------------------- encode
def _sort_and_pad(w_s, a_s, xyz_s3, n_max):
    """Wrap into [0, 1), sort by W then x, y, z (as the public `sort_atoms`), pad."""
    xyz_s3 = xyz_s3 - np.floor(xyz_s3)
    order = np.lexsort((xyz_s3[:, 2], xyz_s3[:, 1], xyz_s3[:, 0], w_s))
    n = len(w_s)
    W = np.zeros(n_max, np.int64)
    A = np.zeros(n_max, np.int64)
    XYZ = np.zeros((n_max, 3), np.float64)
    W[:n], A[:n], XYZ[:n] = w_s[order], a_s[order], xyz_s3[order]
    return XYZ, A, W


def _from_seed(refined, tol: float):
    """pyxtal's Wyckoff assignment of `refined`, silencing its prints."""
    from pyxtal import pyxtal

    _pyxtal_fast_paths()
    crystal = pyxtal()
    with contextlib.redirect_stdout(io.StringIO()):
        crystal.from_seed(refined, tol=tol)
    if not getattr(crystal, "valid", True) or not crystal.atom_sites:
        raise RuntimeError("pyxtal returned no atom sites")
    return crystal


def encode(structure, n_max: int = wy.N_MAX, symprec: float = 0.01,
           tol: float = 0.01) -> Tokens:
    """Tokenize a pymatgen Structure (public CrystalFormer recipe, design 1.1).

    Raises TokenizeError with the reason when the structure does not fit.
    """
    from pymatgen.core import Element
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    if not structure.is_ordered:
        raise TokenizeError("disordered structure (partial occupancies) cannot be tokenized")
    for sp in structure.composition.elements:
        if not isinstance(sp, Element) or not 1 <= sp.Z <= MAX_Z:
            raise TokenizeError(f"unknown element {sp!s} (tokens cover H..Og)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sga = SpacegroupAnalyzer(structure, symprec=symprec)
            n_orbits = len(set(sga.get_symmetry_dataset().equivalent_atoms))
            refined = sga.get_refined_structure()
        except Exception as exc:  # spglib failures surface as various types
            raise TokenizeError(f"symmetry analysis failed at symprec={symprec}: {exc}") from exc
        if n_orbits > n_max - 1:  # cheap early exit before pyxtal (e.g. big P1 cells)
            raise TokenizeError(f"{n_orbits} symmetry-inequivalent sites (of {len(structure)} "
                                f"atoms); at most {n_max - 1} fit in n_max={n_max}")
        errors = []
        for t in dict.fromkeys((tol, 1e-4)):  # the public code's retry
            try:
                crystal = _from_seed(refined, t)
                break
            except Exception as exc:
                errors.append(f"tol={t}: {type(exc).__name__}: {exc}")
        else:
            raise TokenizeError("pyxtal Wyckoff assignment failed (" + "; ".join(errors) + ")")

    sites = crystal.atom_sites
    if len(sites) > n_max - 1:
        raise TokenizeError(f"{len(sites)} symmetry-inequivalent sites; at most {n_max - 1} "
                            f"fit in n_max={n_max} (one pad slot carries the lattice)")
    g = int(crystal.group.number)
    w_s = np.array([wy.letter_to_index(s.wp.letter) for s in sites], np.int64)
    a_s = np.array([Element(s.specie).Z for s in sites], np.int64)
    xyz_s3 = np.array([s.position for s in sites], np.float64)
    _check_representatives(g, w_s, xyz_s3)
    n_atoms = int(wy.mult_table()[g - 1, w_s].sum())
    if n_atoms != sum(s.wp.multiplicity for s in sites):
        raise TokenizeError(f"pyxtal multiplicities disagree with the Wyckoff table of SG {g}")

    para = crystal.lattice.get_para(degree=True)
    L = np.concatenate([np.asarray(para[:3]) / n_atoms ** (1 / 3), np.deg2rad(para[3:])])
    XYZ, A, W = _sort_and_pad(w_s, a_s, xyz_s3, n_max)
    return Tokens(G=g, L=L.astype(np.float64), XYZ=XYZ, A=A, W=W, n_atoms=n_atoms)


def _check_representatives(g: int, w_s: np.ndarray, xyz_s3: np.ndarray) -> None:
    """The representative must be a fixed point of op0 of its position (public assert)."""
    op0 = wy.op0_table()[g - 1, w_s]  # (s, 3, 4)
    proj = np.einsum("sij,sj->si", op0[:, :, :3], xyz_s3) + op0[:, :, 3]
    diff = proj - xyz_s3
    if np.abs(diff - np.rint(diff)).max(initial=0.0) > 1e-4:
        raise TokenizeError(f"pyxtal representative is not fixed by op0 of its Wyckoff "
                            f"position (SG {g}); the Wyckoff tables disagree with pyxtal")
