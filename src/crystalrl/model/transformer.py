"""The CrystalFormer network in Flax NNX: tokens -> raw head outputs.

A crystal (G, XYZ, A, W) becomes 5 tokens per Wyckoff site, W_i A_i X_i Y_i Z_i;
the space group is not a token but is concatenated into every token and drives
the first-Wyckoff head. The output at each token predicts the next variable
(row 0, from G alone, predicts W_1). Masks and normalisation live in
`likelihood.py`, so this module returns raw outputs that match the public
Haiku code's network before its masks.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crystalrl import wyckoff
from crystalrl.model.config import ModelConfig
from crystalrl.model.layers import INIT, Block, dense, layer_norm


class CrystalFormer(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        E, m = cfg.embed_size, cfg.model_size
        self.g_embed = nnx.Embed(230, E, embedding_init=INIT, rngs=rngs)
        self.w_embed = nnx.Embed(cfg.wyck_types, E, embedding_init=INIT, rngs=rngs)
        self.a_embed = nnx.Embed(cfg.atom_types, E, embedding_init=INIT, rngs=rngs)
        if cfg.h0_size > 0:  # first-Wyckoff logits from an MLP on the space-group embedding
            self.h0_in = dense(E, cfg.h0_size, rngs)
            self.h0_out = dense(cfg.h0_size, cfg.wyck_types, rngs)
        else:  # or from a plain (230, wyck_types) table
            self.w_params = nnx.Param(INIT(rngs.params(), (230, cfg.wyck_types)))
        self.w_proj = dense(2 * E + 1, m, rngs)  # [g_emb, w_emb, multiplicity]
        self.a_proj = dense(2 * E, m, rngs)  # [g_emb, a_emb]
        self.xyz_proj = nnx.List([dense(E + 2 * cfg.Nf, m, rngs) for _ in range(3)])
        self.blocks = nnx.List([
            Block(m, cfg.num_heads, cfg.key_size, cfg.widening_factor, cfg.dropout_rate,
                  cfg.attn_dropout, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_ln = layer_norm(m, rngs)
        self.head = dense(m, cfg.output_size, rngs)

    # ------------------------------------------------------------------ token embeddings
    def first_w_logits(self, G_b: jax.Array) -> jax.Array:
        """Raw (B, wyck_types) logits of the first Wyckoff letter, from G only."""
        if self.cfg.h0_size > 0:
            return self.h0_out(jax.nn.gelu(self.h0_in(self.g_embed(G_b - 1)), approximate=True))
        return self.w_params[G_b - 1]

    def embed_w(self, G_b: jax.Array, W_b: jax.Array) -> jax.Array:
        """W token(s): Linear([g_emb, w_emb, multiplicity as a raw float]); W_b is (B,) or (B, n)."""
        g = self._g_like(G_b, W_b)
        M = jnp.asarray(wyckoff.mult_table())[jnp.broadcast_to(G_b.reshape(G_b.shape + (1,) * (W_b.ndim - 1)),
                                            W_b.shape) - 1, W_b]
        return self.w_proj(jnp.concatenate([g, self.w_embed(W_b), M[..., None].astype(g.dtype)],
                                           axis=-1))

    def embed_a(self, G_b: jax.Array, A_b: jax.Array) -> jax.Array:
        return self.a_proj(jnp.concatenate([self._g_like(G_b, A_b), self.a_embed(A_b)], axis=-1))

    def embed_coord(self, G_b: jax.Array, x_b: jax.Array, axis: int) -> jax.Array:
        """X/Y/Z token: Linear([g_emb, sin 2pi f x, cos 2pi f x, f = 1..Nf interleaved])."""
        g = self._g_like(G_b, x_b)
        f = jnp.arange(1, self.cfg.Nf + 1, dtype=g.dtype)
        ang = 2 * jnp.pi * x_b.astype(g.dtype)[..., None] * f  # (..., Nf)
        four = jnp.stack([jnp.sin(ang), jnp.cos(ang)], axis=-1).reshape(*x_b.shape, -1)
        return self.xyz_proj[axis](jnp.concatenate([g, four], axis=-1))

    def _g_like(self, G_b: jax.Array, like: jax.Array) -> jax.Array:
        g = self.g_embed(G_b - 1)  # (B, E)
        for _ in range(like.ndim - 1):
            g = g[:, None, :]
        return jnp.broadcast_to(g, like.shape + g.shape[-1:])

    def _head(self, h: jax.Array) -> jax.Array:
        return self.head(self.final_ln(h))

    # ------------------------------------------------------------------ full sequence
    def __call__(self, G_b: jax.Array, XYZ_bn3: jax.Array, A_bn: jax.Array, W_bn: jax.Array,
                 *, deterministic: bool) -> jax.Array:
        """Raw outputs (B, 5n+1, output_size): row 0 first-Wyckoff head (zero padded),
        then the outputs at tokens W_i, A_i, X_i, Y_i, Z_i of each site i."""
        B, n = A_bn.shape
        toks = [self.embed_w(G_b, W_bn), self.embed_a(G_b, A_bn)]
        toks += [self.embed_coord(G_b, XYZ_bn3[..., c], c) for c in range(3)]
        h = jnp.stack(toks, axis=2).reshape(B, 5 * n, -1)  # interleave per site
        for block in self.blocks:
            h = block(h, deterministic=deterministic)
        out_bTo = self._head(h)
        h0 = self.first_w_logits(G_b)
        h0 = jnp.pad(h0, ((0, 0), (0, out_bTo.shape[-1] - h0.shape[-1])))
        return jnp.concatenate([h0[:, None, :].astype(out_bTo.dtype), out_bTo], axis=1)

    # ------------------------------------------------------------------ incremental decoding
    def init_cache(self, batch: int, dtype=jnp.float32, length: int | None = None) -> list[dict]:
        """Empty key/value cache: per layer k, v of shape (B, H, length, key_size);
        `length` defaults to 5*n_max (a shorter cache can be grown with `grow_cache`)."""
        c = self.cfg
        shape = (batch, c.num_heads, length or c.seq_len, c.key_size)
        return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
                for _ in range(c.num_layers)]

    @staticmethod
    def grow_cache(cache: list[dict], length: int) -> list[dict]:
        """Zero-pad every k, v along the position axis to `length`."""
        return [{k: jnp.pad(v, ((0, 0), (0, 0), (0, length - v.shape[2]), (0, 0)))
                 for k, v in layer.items()} for layer in cache]

    def step(self, h_bm: jax.Array, cache: list[dict], pos: jax.Array
             ) -> tuple[jax.Array, list[dict]]:
        """Feed one embedded token per row at sequence position `pos` (0-based);
        returns the raw output (B, output_size) at that token and the new cache."""
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache):
            h_bm, layer_cache = block.decode(h_bm, layer_cache, pos)
            new_cache.append(layer_cache)
        return self._head(h_bm), new_cache


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (nnx.Param leaves)."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
