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
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from crystalrl import wyckoff as wy
from crystalrl.structures import parse_structure

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

    from crystalrl.structures import unknown_elements

    if not structure.is_ordered:
        raise TokenizeError("disordered structure (partial occupancies) cannot be tokenized")
    for sym in unknown_elements(structure, MAX_Z)[:1]:
        raise TokenizeError(f"unknown element {sym} (tokens cover H..Og)")
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


# ----------------------------------------------------------------------------- decode
def _decode_arrays(G, L, XYZ, A, W):
    """Tokens -> (lattice parameters in Angstrom/degrees, Z per atom, frac coords)."""
    g = int(G)
    if not 1 <= g <= wy.N_SG:
        raise TokenizeError(f"space group {g} out of range 1..{wy.N_SG}")
    A = np.asarray(A, np.int64)
    W = np.asarray(W, np.int64)
    XYZ = np.asarray(XYZ, np.float64).reshape(len(A), 3)
    L = np.asarray(L, np.float64)
    keep = A > 0
    if not keep.any():
        raise TokenizeError("no atoms (every A token is the pad 0)")
    a_s, w_s, x_s3 = A[keep], W[keep], XYZ[keep]
    wmax = int(wy.wmax_table()[g - 1])
    if (a_s > MAX_Z).any():
        raise TokenizeError(f"atomic number {a_s.max()} > {MAX_Z}")
    if ((w_s < 1) | (w_s > wmax)).any():
        raise TokenizeError(f"Wyckoff index {w_s[(w_s < 1) | (w_s > wmax)][0]} invalid for "
                            f"space group {g} (valid 1..{wmax})")
    if not (np.isfinite(x_s3).all() and np.isfinite(L).all()):
        raise TokenizeError("non-finite coordinates or lattice")

    # 1-2: the orbit member of x closest to op0's subspace (the sampled x may be off it)
    gen_m34 = wy.general_ops(g)
    img_sm3 = np.einsum("mij,sj->smi", gen_m34[:, :, :3], x_s3) + gen_m34[None, :, :, 3]
    img_sm3 -= np.floor(img_sm3)
    op0_s34 = wy.op0_table()[g - 1, w_s]
    proj_sm3 = np.einsum("sij,smj->smi", op0_s34[:, :, :3], img_sm3) + op0_s34[:, None, :, 3]
    d_sm3 = proj_sm3 - img_sm3
    d_sm3 -= np.rint(d_sm3)
    best_s = np.argmin((d_sm3 ** 2).sum(-1), axis=1)
    xp_s3 = img_sm3[np.arange(len(w_s)), best_s]

    # 3: every operation of the site's own Wyckoff position, gathered from the flat table
    mult_s = wy.mult_table()[g - 1, w_s].astype(np.int64)
    site_t = np.repeat(np.arange(len(w_s)), mult_s)
    first_t = np.repeat(np.cumsum(mult_s) - mult_s, mult_s)
    op_t = np.repeat(wy.ops_offset_table()[g - 1, w_s], mult_s) + np.arange(len(site_t)) - first_t
    ops_t34 = wy.ops_flat()[op_t]
    frac_t3 = np.einsum("tij,tj->ti", ops_t34[:, :, :3], xp_s3[site_t]) + ops_t34[:, :, 3]
    frac_t3 -= np.floor(frac_t3)

    n_atoms = int(mult_s.sum())
    lat6 = np.concatenate([L[:3] * n_atoms ** (1 / 3), np.rad2deg(L[3:6])])
    lat6 = wy.symmetrize_lattice(g, lat6)
    if (lat6[:3] <= 0).any() or (lat6[3:] <= 0).any() or (lat6[3:] >= 180).any():
        raise TokenizeError(f"invalid lattice parameters {np.round(lat6, 4).tolist()}")
    return lat6, a_s[site_t], frac_t3


def decode(G, L, XYZ, A, W):
    """Tokens -> pymatgen Structure (design section 1.3); raises TokenizeError.

    Lengths are un-normalised with N = sum of multiplicities, angles converted to
    degrees, and dependent lattice parameters filled by `symmetrize_lattice`.
    Overlapping atoms are kept (validity is judged downstream).
    """
    from pymatgen.core import Lattice, Structure

    lat6, z_t, frac_t3 = _decode_arrays(G, L, XYZ, A, W)
    lattice = Lattice.from_parameters(*lat6)
    # pymatgen clips impossible angle triples (e.g. 170, 170, 170) instead of failing
    if not np.isfinite(lattice.matrix).all() or lattice.volume <= 1e-6 * np.prod(lat6[:3]) \
            or not np.allclose(lattice.angles, lat6[3:], atol=1e-3):
        raise TokenizeError(f"degenerate lattice {np.round(lat6, 4).tolist()}")
    return Structure(lattice, z_t.tolist(), frac_t3)


def decode_many(G, L, XYZ, A, W) -> tuple[list, list]:
    """Decode a batch: returns (structures, reasons); a failed row is (None, reason)."""
    structures, reasons = [], []
    for i in range(len(G)):
        try:
            structures.append(decode(G[i], L[i], XYZ[i], A[i], W[i]))
            reasons.append(None)
        except (TokenizeError, ValueError) as exc:
            structures.append(None)
            reasons.append(f"row {i}: {exc}")
    return structures, reasons


# ----------------------------------------------------------------------------- token tables
#: The token arrays of a crystal, in sequence order of their meaning (space group, lattice, sites).
TOKEN_KEYS = ("G", "L", "XYZ", "A", "W")
TOKEN_COLUMNS = ["id", *TOKEN_KEYS, "n_sites", "n_atoms"]


def _row(id_: str, t: Tokens) -> dict[str, Any]:
    return {"id": id_, "G": t.G, "L": t.L.tolist(), "XYZ": t.XYZ.reshape(-1).tolist(),
            "A": t.A.tolist(), "W": t.W.tolist(), "n_sites": t.n_sites, "n_atoms": t.n_atoms}


def tokens_to_arrays(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Token table -> numpy arrays G (B,), L (B,6), XYZ (B,n_max,3), A (B,n_max), W (B,n_max)."""
    def stack(col, dtype):
        return np.array([np.asarray(v, dtype) for v in df[col]], dtype).reshape(len(df), -1)

    A = stack("A", np.int64)
    return {"G": df["G"].to_numpy(np.int64), "L": stack("L", np.float64),
            "XYZ": stack("XYZ", np.float64).reshape(len(df), A.shape[1], 3),
            "A": A, "W": stack("W", np.int64)}


def arrays_to_tokens_df(arrays: dict[str, np.ndarray], ids: Sequence[str] | None = None
                        ) -> pd.DataFrame:
    """Inverse of `tokens_to_arrays`; n_sites / n_atoms are recomputed from A, W, G."""
    G = np.asarray(arrays["G"], np.int64)
    A = np.asarray(arrays["A"], np.int64)
    W = np.asarray(arrays["W"], np.int64)
    XYZ = np.asarray(arrays["XYZ"], np.float64).reshape(len(G), -1)
    L = np.asarray(arrays["L"], np.float64)
    mult = wy.mult_table()[np.clip(G, 1, wy.N_SG)[:, None] - 1, np.clip(W, 0, wy.WYCK_TYPES - 1)]
    return pd.DataFrame({
        "id": [str(i) for i in (ids if ids is not None else range(len(G)))],
        "G": G, "L": list(L), "XYZ": list(XYZ), "A": list(A), "W": list(W),
        "n_sites": (A > 0).sum(1), "n_atoms": np.where(A > 0, mult, 0).sum(1),
    })[TOKEN_COLUMNS]


# ----------------------------------------------------------------------------- batch
def _encode_one(job) -> tuple[str, dict | None, str | None]:
    """Worker: never raises; returns (id, row, None) or (id, None, reason)."""
    id_, obj, n_max, symprec, tol = job
    try:
        s = parse_structure(obj)
    except Exception as exc:
        return id_, None, f"{id_}: cannot parse structure ({type(exc).__name__}: {exc})"
    try:
        return id_, _row(id_, encode(s, n_max=n_max, symprec=symprec, tol=tol)), None
    except TokenizeError as exc:
        return id_, None, f"{id_}: {exc.reason}"
    except Exception as exc:  # anything unexpected is a rejected row, not a crash
        return id_, None, f"{id_}: tokenizer error ({type(exc).__name__}: {exc})"


def _worker_init() -> None:
    _pyxtal_fast_paths()


def tokenize_many(structures_or_cifs: Iterable, ids: Sequence[str], n_max: int = wy.N_MAX,
                  symprec: float = 0.01, tol: float = 0.01, processes: int = 1,
                  progress: bool = True, sources: Sequence[str] | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tokenize many structures in parallel; bad rows are rejected, never raised.

    Returns (tokens_df with `TOKEN_COLUMNS`, rejected_df with id, source, stage, reason),
    both in input order.
    """
    from tqdm.auto import tqdm

    items = list(structures_or_cifs)
    ids = [str(i) for i in ids]
    if len(items) != len(ids):
        raise ValueError(f"{len(items)} structures but {len(ids)} ids")
    jobs = [(i, obj, n_max, symprec, tol) for i, obj in zip(ids, items)]
    bar = dict(total=len(jobs), disable=not progress, desc="tokenize", unit="struct",
               mininterval=2.0)
    if processes <= 1 or len(jobs) < 2:
        _worker_init()
        results = [_encode_one(j) for j in tqdm(jobs, **bar)]
    else:
        # fork: workers inherit the imported libraries (no ~3 s re-import each) and never
        # re-run the caller's __main__ (spawn/forkserver would re-execute a Snakemake
        # script). Workers only use numpy/spglib/pyxtal, never jax or torch threads.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        chunk = max(1, min(64, len(jobs) // (processes * 8)))
        with ProcessPoolExecutor(processes, mp_context=ctx, initializer=_worker_init) as ex:
            results = list(tqdm(ex.map(_encode_one, jobs, chunksize=chunk), **bar))

    src = list(sources) if sources is not None else [None] * len(ids)
    rows = [row for _, row, _ in results if row is not None]
    rejected = [{"id": i, "source": s, "stage": "tokenize", "reason": reason}
                for (i, _, reason), s in zip(results, src) if reason is not None]
    tokens = pd.DataFrame(rows, columns=TOKEN_COLUMNS)
    tokens = tokens.astype({"G": "int64", "n_sites": "int64", "n_atoms": "int64"})
    return tokens, pd.DataFrame(rejected, columns=["id", "source", "stage", "reason"])
