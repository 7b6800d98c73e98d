"""Token arrays for training: load, check, and a deterministic, resumable data order.

The data order is a pure function of (seed, step): epoch e uses the permutation
`default_rng([seed, e]).permutation(N)` and step t reads batch `t % steps_per_epoch`
of epoch `t // steps_per_epoch` (the remainder of an epoch is dropped, as in the
public code). A run restarted from a checkpoint at step t therefore sees exactly
the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crystalrl.digest import digest_arrays
from crystalrl.tokenizer import TOKEN_KEYS, tokens_to_arrays

KEYS = TOKEN_KEYS
_LOG = logging.getLogger("crystalrl.train.data")


def load_token_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Read a token Parquet (`data/tokens_{split}.parquet`) into numpy arrays.

    Returns (arrays, ids): arrays G (B,), L (B,6), XYZ (B,21,3), A (B,21), W (B,21).
    """
    df = pd.read_parquet(path)
    missing = [k for k in KEYS if k not in df.columns]
    if missing:
        raise KeyError(f"{path}: token table lacks column(s) {missing}; has {list(df.columns)}")
    if df.empty:
        raise ValueError(f"{path}: the token table has no rows, so there is nothing to train or validate on; "
                         "its tokenize log says why every row was rejected (for SFT: no relaxed sample passed "
                         "sft.e_hull_max, see the sft_data log)")
    ids = df["id"].astype(str).to_numpy() if "id" in df.columns else np.arange(len(df)).astype(str)
    return tokens_to_arrays(df), ids


def clean_arrays(arrays: dict[str, np.ndarray], *, n_max: int, atom_types: int, wyck_types: int,
                 name: str = "tokens", ids: np.ndarray | None = None,
                 log: logging.Logger | None = None) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Check shapes and value ranges; drop bad rows with a logged reason.

    Returns (clean arrays cast to training dtypes, rejected rows as dicts with
    `id`, `reason`). A wrong key or shape raises (the whole table is unusable);
    a bad row (NaN lattice, G outside 1..230, a token outside the model's
    vocabulary) is dropped and the run goes on.
    """
    log = log or _LOG
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise KeyError(f"{name}: token arrays lack key(s) {missing}")
    B = len(arrays["G"])
    want = dict(G=(B,), L=(B, 6), XYZ=(B, n_max, 3), A=(B, n_max), W=(B, n_max))
    for k, shape in want.items():
        if tuple(arrays[k].shape) != shape:
            raise ValueError(f"{name}: key {k} has shape {tuple(arrays[k].shape)}, expected {shape} "
                             f"(n_max={n_max} from the model config)")
    ids = np.arange(B).astype(str) if ids is None else np.asarray(ids).astype(str)
    G, L, XYZ, A, W = (np.asarray(arrays[k]) for k in KEYS)
    checks = [
        (~((G >= 1) & (G <= 230)), "space group G outside 1..230"),
        (~np.isfinite(L).all(1), "lattice L has NaN/inf"),
        (~np.isfinite(XYZ).all((1, 2)), "coordinates XYZ have NaN/inf"),
        (((A < 0) | (A >= atom_types)).any(1), f"element A outside 0..{atom_types - 1}"),
        (((W < 0) | (W >= wyck_types)).any(1), f"Wyckoff letter W outside 0..{wyck_types - 1}"),
        ((W[:, 0] == 0), "no sites (W[0] is the pad letter)"),
    ]
    bad = np.zeros(B, bool)
    rejected = []
    for mask, reason in checks:
        for i in np.flatnonzero(mask & ~bad):
            rejected.append(dict(id=ids[i], reason=f"{name} row {i} (id {ids[i]}): {reason}"))
            log.warning("dropping %s", rejected[-1]["reason"])
        bad |= mask
    keep = ~bad
    clean = dict(G=G[keep].astype(np.int32), L=L[keep].astype(np.float32),
                 XYZ=XYZ[keep].astype(np.float32), A=A[keep].astype(np.int32),
                 W=W[keep].astype(np.int32))
    return clean, rejected


@dataclass(frozen=True)
class DataOrder:
    """Seeded per-epoch shuffling: which rows step t trains on."""

    n_rows: int
    batch_size: int
    seed: int

    def __post_init__(self):
        if self.n_rows < self.batch_size:
            raise ValueError(f"batch_size {self.batch_size} is larger than the training set "
                             f"({self.n_rows} rows)")

    @property
    def steps_per_epoch(self) -> int:
        return self.n_rows // self.batch_size

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of global step `step` (0-based)."""
        return divmod(step, self.steps_per_epoch)

    def permutation(self, epoch: int) -> np.ndarray:
        return _permutation(self.seed, epoch, self.n_rows)

    def indices(self, step: int) -> np.ndarray:
        epoch, pos = self.position(step)
        return self.permutation(epoch)[pos * self.batch_size:(pos + 1) * self.batch_size]


@functools.lru_cache(maxsize=2)
def _permutation(seed: int, epoch: int, n_rows: int) -> np.ndarray:
    """Row order of one epoch; cached since every step of the epoch asks for it."""
    perm = np.random.default_rng([seed, epoch]).permutation(n_rows)
    perm.flags.writeable = False
    return perm


def take(arrays: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    """The rows `idx` of every array."""
    return {k: v[idx] for k, v in arrays.items()}


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """A short hash of the token arrays: a checkpoint of other data must not be resumed."""
    return digest_arrays({k: arrays[k] for k in KEYS})
