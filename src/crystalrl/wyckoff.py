"""Wyckoff-position tables for the 230 space groups, derived from pyxtal's database.

CrystalFormer tokenizes a crystal as (space group G, Wyckoff letters W, ...), so the
model, the likelihood masks, the sampler and the decoder all need per-(G, W) facts:
multiplicity, the symmetry operations of each position, which coordinates are free,
and which lattice parameters are free. They are read from pyxtal's bundled
``database/wyckoff_list.csv`` (ITA standard settings; rows list every position,
general position first, each as its orbit's xyz strings) and parsed with pymatgen's
``SymmOp.from_xyz_str``; nothing is typed by hand.

Indexing convention (as the public CrystalFormer code): tables are indexed
``[g - 1, w]`` with ``w = 1`` for letter 'a' ... 26 for 'z', 27 for 'A'; ``w = 0`` is
the pad. Building takes ~0.5 s, so the result is cached in an .npz under
``~/.cache/crystalrl`` keyed by the pyxtal and pymatgen versions.
"""
from __future__ import annotations

import functools
import os
import string
from importlib import metadata
from pathlib import Path

import numpy as np

N_SG = 230
WYCK_TYPES = 28  # pad + 27 letters (SG 47 Pmmm has a..z, A)
N_MAX = 21  # sites per crystal in the token sequence (at most 20 real + 1 pad)

_LETTERS = string.ascii_lowercase + "A"  # index 1..27
_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal",
            "hexagonal", "cubic")
# Free lattice parameters (a, b, c, alpha, beta, gamma) per crystal system.
_SYSTEM_LATTICE_MASK = {
    "triclinic": (1, 1, 1, 1, 1, 1),
    "monoclinic": (1, 1, 1, 0, 1, 0),
    "orthorhombic": (1, 1, 1, 0, 0, 0),
    "tetragonal": (1, 0, 1, 0, 0, 0),
    "trigonal": (1, 0, 1, 0, 0, 0),
    "hexagonal": (1, 0, 1, 0, 0, 0),
    "cubic": (1, 0, 0, 0, 0, 0),
}
_CACHE_FORMAT = 1


# ----------------------------------------------------------------------------- letters
def letter_to_index(letter: str) -> int:
    """'a' -> 1 ... 'z' -> 26, 'A' -> 27 (the W token)."""
    i = _LETTERS.find(letter)
    if len(letter) != 1 or i < 0:
        raise ValueError(f"not a Wyckoff letter: {letter!r} (expected a..z or A)")
    return i + 1


def index_to_letter(i: int) -> str:
    """Inverse of `letter_to_index` (1 -> 'a', 27 -> 'A')."""
    i = int(i)
    if not 1 <= i <= len(_LETTERS):
        raise ValueError(f"Wyckoff index {i} out of range 1..{len(_LETTERS)}")
    return _LETTERS[i - 1]


# ----------------------------------------------------------------------------- building
def _cache_file() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "crystalrl"
    key = f"pyxtal{metadata.version('pyxtal')}-pymatgen{metadata.version('pymatgen')}"
    return root / f"wyckoff-v{_CACHE_FORMAT}-{key}.npz"


def _build() -> dict[str, np.ndarray]:
    """Parse pyxtal's wyckoff_list.csv into flat operation arrays (slow path)."""
    import ast
    from importlib.resources import files

    import pandas as pd
    from pymatgen.core.operations import SymmOp
    from pyxtal.symmetry import get_pbc_and_lattice

    csv = files("pyxtal") / "database" / "wyckoff_list.csv"
    with csv.open() as fh:
        col = pd.read_csv(fh).iloc[:, 1].dropna()
    groups = [ast.literal_eval(s) for s in col]
    if len(groups) != N_SG:
        raise RuntimeError(f"{csv}: expected {N_SG} space groups, found {len(groups)}")

    mult = np.zeros((N_SG, WYCK_TYPES), np.int32)
    offset = np.zeros((N_SG, WYCK_TYPES), np.int32)
    ops: list[np.ndarray] = []
    for g0, positions in enumerate(groups):
        # The csv lists the general position first; letter 'a' is the last one.
        for w, orbit in enumerate(reversed(positions), start=1):
            mult[g0, w] = len(orbit)
            offset[g0, w] = len(ops)
            ops.extend(SymmOp.from_xyz_str(s).affine_matrix[:3] for s in orbit)
    system = np.array([_SYSTEMS.index(get_pbc_and_lattice(g, 3)[1])
                       for g in range(1, N_SG + 1)], np.int8)
    return {"mult": mult, "offset": offset, "ops": np.stack(ops), "system": system}


@functools.cache
def _tables() -> dict[str, np.ndarray]:
    """Load the parsed tables from the cache, building (and caching) them if needed."""
    path = _cache_file()
    try:
        with np.load(path) as z:
            raw = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        raw = _build()
        try:
            from crystalrl.io import atomic_path
            with atomic_path(path) as tmp:
                np.savez(tmp, **raw)
        except OSError:
            pass  # read-only home: rebuild each time, still correct
    for v in raw.values():
        v.setflags(write=False)
    return raw


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# ----------------------------------------------------------------------------- tables
@functools.cache
def mult_table() -> np.ndarray:
    """(230, 28) int32 multiplicity, indexed [g-1, w]; 0 for the pad and beyond wmax."""
    return _tables()["mult"]


@functools.cache
def wmax_table() -> np.ndarray:
    """(230,) int32 number of Wyckoff letters of each group (the largest valid w)."""
    return _frozen((mult_table() > 0).sum(axis=1).astype(np.int32))


def ops_flat() -> np.ndarray:
    """(n_ops, 3, 4) float64: every operation of every position, concatenated.

    Position (g, w) owns rows ``ops_offset_table()[g-1, w]`` onward, ``mult`` of them
    (for gather-based decoders that cannot use ragged lists).
    """
    return _tables()["ops"]


def ops_offset_table() -> np.ndarray:
    """(230, 28) int32 start row in `ops_flat()` of each position (0 for pads)."""
    return _tables()["offset"]


@functools.cache
def op0_table() -> np.ndarray:
    """(230, 28, 3, 4) float64 first operation of each position (zeros for pads).

    A valid orbit representative x satisfies op0(x) = x; the sampler projects
    coordinates with it.
    """
    t = _tables()
    op0 = t["ops"][t["offset"]]
    op0[mult_table() == 0] = 0.0
    return _frozen(op0)


@functools.cache
def dof0_table() -> np.ndarray:
    """(230, 28) bool: True iff op0 has a rank-0 linear part (a fixed point).

    The pad index 0 (and indices beyond wmax) are True, as in the public code.
    """
    rank = np.linalg.matrix_rank(op0_table()[..., :3])
    return _frozen(rank == 0)


@functools.cache
def fc_mask_table() -> np.ndarray:
    """(230, 28, 3) bool: coordinate i is 'free' iff op0's row i has a nonzero linear part.

    Public-code definition: dependent coordinates count as free ('x,x,z' -> [1,1,1]).
    """
    return _frozen(np.any(op0_table()[..., :3] != 0, axis=-1))


def wyckoff_ops(g: int, w: int) -> np.ndarray:
    """(m, 3, 4) all operations of Wyckoff position w (1 = 'a') of space group g."""
    g, w = int(g), int(w)
    if not 1 <= g <= N_SG:
        raise ValueError(f"space group {g} out of range 1..{N_SG}")
    m = int(mult_table()[g - 1, w]) if 0 <= w < WYCK_TYPES else 0
    if m == 0:
        raise ValueError(f"space group {g} has no Wyckoff position w={w} "
                         f"(valid 1..{wmax_table()[g - 1]})")
    start = int(ops_offset_table()[g - 1, w])
    return ops_flat()[start:start + m]


def general_ops(g: int) -> np.ndarray:
    """(M, 3, 4) operations of the general position of g (its last letter)."""
    return wyckoff_ops(g, int(wmax_table()[int(g) - 1]))


@functools.cache
def lattice_mask_table() -> np.ndarray:
    """(230, 6) bool free lattice parameters (a, b, c, alpha, beta, gamma) per group."""
    masks = np.array([_SYSTEM_LATTICE_MASK[s] for s in _SYSTEMS], bool)
    return _frozen(masks[_tables()["system"]])


def symmetrize_lattice(g, abc_angles_6, degrees: bool = True) -> np.ndarray:
    """Fill the lattice parameters fixed by the crystal system of g.

    monoclinic alpha=gamma=90; orthorhombic all angles 90; tetragonal a=b and 90s;
    trigonal/hexagonal a=b, alpha=beta=90, gamma=120 (hexagonal setting); cubic
    a=b=c and 90s. `abc_angles_6` has shape (..., 6); `g` is an int or an integer
    array broadcastable to its leading dims. Angles in degrees unless `degrees=False`.
    """
    lat = np.array(abc_angles_6, dtype=np.float64, copy=True)
    if lat.shape[-1:] != (6,):
        raise ValueError(f"lattice must have shape (..., 6), got {lat.shape}")
    g = np.asarray(g, dtype=np.int64)
    if np.any((g < 1) | (g > N_SG)):
        raise ValueError(f"space group out of range 1..{N_SG}: {g[(g < 1) | (g > N_SG)]}")
    system = np.broadcast_to(_tables()["system"][g - 1], lat.shape[:-1])
    right, hex_gamma = (90.0, 120.0) if degrees else (np.pi / 2, 2 * np.pi / 3)
    idx = {s: i for i, s in enumerate(_SYSTEMS)}
    a = lat[..., 0].copy()

    uniaxial = system >= idx["tetragonal"]  # tetragonal, trigonal, hexagonal, cubic
    lat[..., 1] = np.where(uniaxial, a, lat[..., 1])
    lat[..., 2] = np.where(system == idx["cubic"], a, lat[..., 2])
    lat[..., 3] = np.where(system >= idx["monoclinic"], right, lat[..., 3])
    lat[..., 4] = np.where(system >= idx["orthorhombic"], right, lat[..., 4])
    gamma = np.where((system == idx["trigonal"]) | (system == idx["hexagonal"]),
                     hex_gamma, right)
    lat[..., 5] = np.where(system >= idx["monoclinic"], gamma, lat[..., 5])
    return lat
