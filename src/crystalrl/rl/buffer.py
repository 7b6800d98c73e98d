"""The experience buffer of CrystalFormer-CSP: the best samples seen so far, and the likelihood
term that keeps training on them (`ppo.buffer_gamma`; used by `crystalrl.rl.ppo`).

Why: an on-policy step spends its batch once, so a rare good crystal is forgotten as soon as
its step is over. The buffer keeps the best rows seen so far and every update also raises
their likelihood (self-imitation, SFT on the best samples), as CrystalFormer-CSP adds to PPO:

    J_total(theta) = J(theta) + gamma * (1/M) sum_m log p_theta(x_m),   x_m ~ Uniform(D),

J the algorithm's objective (PPO, GRPO, REINFORCE), D the buffer, M = `buffer_batch` rows drawn
with replacement at each update with the step's key. After each step's rewards, the
ceil(fraction * n) best of the step's n valid, non-abstaining samples (finite reward) enter D,
and D keeps its `buffer_size` best rows overall. gamma = 0 is the paper: no buffer at all.

The buffer has fixed shapes (S = `buffer_size` rows; an empty row has reward -inf), so a
checkpoint stores it beside the parameters and a resumed run goes on with the same rows.
Rows are sorted by reward, best first; a tie keeps the older row first, then batch order (a
stable sort), so the buffer is a function of the rewards seen. Rewards are kept as float32,
the dtype a checkpoint restores them in, so a resumed run ranks exactly as an unbroken one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import numpy as np

from crystalrl.tokenizer import TOKEN_KEYS

#: The `ppo` keys of the buffer; with buffer_gamma 0 none of them changes a run.
BUFFER_KEYS = ("buffer_gamma", "buffer_fraction", "buffer_size", "buffer_batch")


def _row_layout(n_max: int) -> dict[str, tuple[tuple[int, ...], type]]:
    """Shape and dtype of one crystal's token arrays (as `crystalrl.model.sampler.SampleBatch`)."""
    return dict(G=((), np.int32), L=((6,), np.float32), XYZ=((n_max, 3), np.float32),
                A=((n_max,), np.int32), W=((n_max,), np.int32))


def top_count(n: int, fraction: float) -> int:
    """ceil(fraction * n) without float noise (0.1 * 30 is 3, not 4); at least 1 when n > 0."""
    return min(n, math.ceil(round(fraction * n, 9)))


@dataclass(frozen=True)
class Buffer:
    """The best rows so far: `tokens` (TOKEN_KEYS -> (S, ...) arrays) and `reward_S` (S,) float32,
    best first, -inf on the empty rows at the end."""

    tokens: dict
    reward_S: np.ndarray

    @classmethod
    def empty(cls, size: int, n_max: int) -> "Buffer":
        tokens = {k: np.zeros((size, *shape), dtype) for k, (shape, dtype) in _row_layout(n_max).items()}
        return cls(tokens, np.full(size, -np.inf, np.float32))

    @property
    def rows(self) -> int:
        return int(np.isfinite(self.reward_S).sum())

    def reward_mean(self) -> float:
        """Mean reward of the rows held (NaN while empty)."""
        return float(np.mean(self.reward_S[:self.rows], dtype=np.float64)) if self.rows else np.nan

    def insert(self, tokens_B: dict, reward_B: np.ndarray, keep_B: np.ndarray, fraction: float) -> "Buffer":
        """The buffer after a step: its rows and the top `fraction` of the step's rows with `keep_B`
        (valid, not abstaining) and a finite reward, of which the best S stay."""
        r_B = np.asarray(reward_B, np.float32)
        idx_K = np.flatnonzero(np.asarray(keep_B, bool) & np.isfinite(r_B))
        idx_K = idx_K[np.argsort(-r_B[idx_K], kind="stable")[:top_count(len(idx_K), fraction)]]
        reward_N = np.concatenate([self.reward_S, r_B[idx_K]])
        best_S = np.argsort(-reward_N, kind="stable")[:len(self.reward_S)]  # ties: the older row first
        tokens = {k: np.concatenate([v, np.asarray(tokens_B[k], v.dtype)[idx_K]])[best_S]
                  for k, v in self.tokens.items()}
        return Buffer(tokens, reward_N[best_S])

    def draw(self, key: jax.Array, n: int) -> dict:
        """`n` rows drawn uniformly with replacement from the rows held (the buffer must not be empty)."""
        if not self.rows:
            raise ValueError("draw from an empty buffer")
        idx_M = np.asarray(jax.random.randint(key, (n,), 0, self.rows))
        return {k: v[idx_M] for k, v in self.tokens.items()}

    def arrays(self) -> dict:
        """The pytree a checkpoint stores (`from_arrays` reads it back)."""
        return dict(tokens=dict(self.tokens), reward=self.reward_S)

    @classmethod
    def from_arrays(cls, tree: dict) -> "Buffer":
        return cls({k: np.asarray(tree["tokens"][k]) for k in TOKEN_KEYS}, np.asarray(tree["reward"], np.float32))
