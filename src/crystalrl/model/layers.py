"""Building blocks of the CrystalFormer transformer (Flax NNX), Haiku-compatible.

Conventions copied from the public Haiku code so that its parameters import
exactly: TruncatedNormal(0.01) weights and zero biases, LayerNorm eps 1e-5 with
scale and offset, tanh-approximate GELU, RoPE with the half-rotation (GPT-NeoX)
layout, causal mask applied with `where` before the softmax.

Each attention layer has two entry points: `__call__` over a whole sequence
(training, likelihood) and `decode` for one new token against a functional
key/value cache (sampling).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

INIT = nnx.initializers.truncated_normal(0.01)  # Haiku TruncatedNormal(0.01): +-2 sd, unscaled
LN_EPS = 1e-5  # Haiku's LayerNorm default (Flax's is 1e-6)
ROPE_BASE = 10000.0


def dense(din: int, dout: int, rngs: nnx.Rngs) -> nnx.Linear:
    """A Linear layer initialised as Haiku's hk.Linear(w_init=TruncatedNormal(0.01))."""
    return nnx.Linear(din, dout, kernel_init=INIT, bias_init=nnx.initializers.zeros, rngs=rngs)


def layer_norm(size: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # use_fast_variance=False: E[(x-mean)^2] as Haiku, stable in float32
    return nnx.LayerNorm(size, epsilon=LN_EPS, use_fast_variance=False, rngs=rngs)


def rope_tables(pos_t: jax.Array, dim: int, dtype) -> tuple[jax.Array, jax.Array]:
    """sin, cos tables (T, dim): frequencies 10000^(-2j/dim), halves concatenated."""
    inv_freq = 1.0 / ROPE_BASE ** (jnp.arange(0, dim, 2, dtype=dtype) / dim)
    ang_tf = pos_t.astype(dtype)[:, None] * inv_freq[None, :]
    ang_td = jnp.concatenate([ang_tf, ang_tf], axis=-1)
    return jnp.sin(ang_td), jnp.cos(ang_td)


def apply_rope(x_bthd: jax.Array, sin_td: jax.Array, cos_td: jax.Array) -> jax.Array:
    """x*cos + rotate_half(x)*sin with rotate_half([x1, x2]) = [-x2, x1]."""
    x1, x2 = jnp.split(x_bthd, 2, axis=-1)
    rot = jnp.concatenate([-x2, x1], axis=-1)
    return x_bthd * cos_td[:, None, :] + rot * sin_td[:, None, :]


class Attention(nnx.Module):
    """Multi-head causal self-attention with RoPE on queries and keys."""

    def __init__(self, model_size: int, num_heads: int, key_size: int, attn_dropout: float,
                 *, rngs: nnx.Rngs):
        self.num_heads, self.key_size = num_heads, key_size
        width = num_heads * key_size
        self.query = dense(model_size, width, rngs)
        self.key = dense(model_size, width, rngs)
        self.value = dense(model_size, width, rngs)
        self.out = dense(width, model_size, rngs)
        self.dropout = nnx.Dropout(attn_dropout, rngs=rngs)

    def _heads(self, layer: nnx.Linear, x_btm: jax.Array) -> jax.Array:
        y = layer(x_btm)
        return y.reshape(*y.shape[:-1], self.num_heads, self.key_size)

    def __call__(self, x_btm: jax.Array, *, deterministic: bool) -> jax.Array:
        T = x_btm.shape[1]
        sin, cos = rope_tables(jnp.arange(T), self.key_size, x_btm.dtype)
        q = apply_rope(self._heads(self.query, x_btm), sin, cos)
        k = apply_rope(self._heads(self.key, x_btm), sin, cos)
        v = self._heads(self.value, x_btm)
        logits_bhtT = jnp.einsum("bthd,bThd->bhtT", q, k) / jnp.sqrt(
            jnp.asarray(self.key_size, x_btm.dtype))
        causal_tT = jnp.tril(jnp.ones((T, T), bool))
        logits_bhtT = jnp.where(causal_tT, logits_bhtT, -1e30)  # as Haiku's MHA
        weights = jax.nn.softmax(logits_bhtT, axis=-1)
        weights = self.dropout(weights, deterministic=deterministic)
        attn_bthd = jnp.einsum("bhtT,bThd->bthd", weights, v)
        return self.out(attn_bthd.reshape(*attn_bthd.shape[:2], -1))

    def decode(self, x_bm: jax.Array, cache: dict, pos: jax.Array) -> tuple[jax.Array, dict]:
        """One new token at position `pos` (same for all rows); cache k, v are (B, H, T, D)."""
        sin, cos = rope_tables(jnp.reshape(pos, (1,)), self.key_size, x_bm.dtype)
        x_b1m = x_bm[:, None, :]
        q_bhd = apply_rope(self._heads(self.query, x_b1m), sin, cos)[:, 0]
        k_bh1d = apply_rope(self._heads(self.key, x_b1m), sin, cos).transpose(0, 2, 1, 3)
        v_bh1d = self._heads(self.value, x_b1m).transpose(0, 2, 1, 3)
        k_cache = jax.lax.dynamic_update_slice_in_dim(cache["k"], k_bh1d.astype(cache["k"].dtype),
                                                      pos, axis=2)
        v_cache = jax.lax.dynamic_update_slice_in_dim(cache["v"], v_bh1d.astype(cache["v"].dtype),
                                                      pos, axis=2)
        logits_bht = jnp.einsum("bhd,bhtd->bht", q_bhd, k_cache) / jnp.sqrt(
            jnp.asarray(self.key_size, x_bm.dtype))
        seen_t = jnp.arange(k_cache.shape[2]) <= pos
        logits_bht = jnp.where(seen_t, logits_bht, -1e30)
        weights = jax.nn.softmax(logits_bht, axis=-1)
        attn_bhd = jnp.einsum("bht,bhtd->bhd", weights, v_cache)
        return self.out(attn_bhd.reshape(attn_bhd.shape[0], -1)), {"k": k_cache, "v": v_cache}


class MLP(nnx.Module):
    """Linear(m -> w*m), GELU (tanh approximation), Linear(w*m -> m)."""

    def __init__(self, model_size: int, widening_factor: int, *, rngs: nnx.Rngs):
        self.up = dense(model_size, widening_factor * model_size, rngs)
        self.down = dense(widening_factor * model_size, model_size, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(x), approximate=True))


class Block(nnx.Module):
    """Pre-LN residual block: h += drop(attn(LN(h))); h += drop(mlp(LN(h)))."""

    def __init__(self, model_size: int, num_heads: int, key_size: int, widening_factor: int,
                 dropout_rate: float, attn_dropout: float, *, rngs: nnx.Rngs):
        self.ln_attn = layer_norm(model_size, rngs)
        self.attn = Attention(model_size, num_heads, key_size, attn_dropout, rngs=rngs)
        self.ln_mlp = layer_norm(model_size, rngs)
        self.mlp = MLP(model_size, widening_factor, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

    def __call__(self, h: jax.Array, *, deterministic: bool) -> jax.Array:
        h = h + self.dropout(self.attn(self.ln_attn(h), deterministic=deterministic),
                             deterministic=deterministic)
        return h + self.dropout(self.mlp(self.ln_mlp(h)), deterministic=deterministic)

    def decode(self, h_bm: jax.Array, cache: dict, pos: jax.Array) -> tuple[jax.Array, dict]:
        a, cache = self.attn.decode(self.ln_attn(h_bm), cache, pos)
        h_bm = h_bm + a
        return h_bm + self.mlp(self.ln_mlp(h_bm)), cache
