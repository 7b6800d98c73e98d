"""Exact log-likelihood of CrystalFormer, term by term as the public code (design §2.4).

log p(W, A, X, L | G) = sum_i log P(W_i) + sum_i log P(A_i)
                      + sum_{i, c free} log vM-mixture(x_ic) + sum_{d free} log N-mixture(L_d)

The mask helpers below are shared with the sampler, so sampling and scoring see
the same distribution. Masks use `where(allowed, logits, -inf)` followed by a
log-softmax (never an additive 1e10 shift, which destroyed O(1) logits in float32
upstream); every row keeps at least one allowed entry, so no NaN appears.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import i0e, logsumexp
from flax import nnx
from jax.scipy.stats import norm

from crystalrl import wyckoff
from crystalrl.model.config import ModelConfig


@functools.cache
def tables() -> dict[str, np.ndarray]:
    """Per-(G, W) tables the masks need (numpy; indexed [g-1, w])."""
    return {"wmax": wyckoff.wmax_table(), "dof0": wyckoff.dof0_table(),
            "fc_mask": wyckoff.fc_mask_table(), "lattice_mask": wyckoff.lattice_mask_table(),
            "mult": wyckoff.mult_table()}


def _t(name: str) -> jax.Array:
    return jnp.asarray(tables()[name])


def _masked_log_softmax(logits: jax.Array, allowed: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(jnp.where(allowed, logits, -jnp.inf), axis=-1)


# ---------------------------------------------------------------------- per-head helpers
def first_w_logprob(h0_bw: jax.Array, G_b: jax.Array) -> jax.Array:
    """First letter: never the pad, and at most wmax(G)."""
    w = jnp.arange(h0_bw.shape[-1])
    allowed = (w > 0) & (w <= _t("wmax")[G_b - 1][..., None])
    return _masked_log_softmax(h0_bw, allowed)


def next_w_logprob(wl_bw: jax.Array, G_b: jax.Array, W_prev_b: jax.Array) -> jax.Array:
    """Letter of site i+1 given W_i: non-decreasing (strictly after a fixed point),
    at most wmax(G); the pad is always allowed and, once emitted, forced."""
    w = jnp.arange(wl_bw.shape[-1])
    g0 = jnp.broadcast_to(G_b.reshape(G_b.shape + (1,) * (W_prev_b.ndim - G_b.ndim)),
                          W_prev_b.shape) - 1
    lo = W_prev_b + _t("dof0")[g0, W_prev_b].astype(W_prev_b.dtype)
    real = (w >= lo[..., None]) & (w <= _t("wmax")[g0][..., None]) & (W_prev_b > 0)[..., None]
    return _masked_log_softmax(wl_bw, real | (w == 0))


def a_logprob(al_ba: jax.Array, W_b: jax.Array) -> jax.Array:
    """Element of a site: a real atom iff the site is not a pad."""
    a = jnp.arange(al_ba.shape[-1])
    return _masked_log_softmax(al_ba, (a > 0) == (W_b > 0)[..., None])


def coord_params(h: jax.Array, cfg: ModelConfig):
    """von Mises mixture of one coordinate: log-weights, loc, kappa = softplus (no floor)."""
    K = cfg.Kx
    return (jax.nn.log_softmax(h[..., :K], axis=-1), h[..., K:2 * K],
            jax.nn.softplus(h[..., 2 * K:3 * K]))


def lattice_params(h: jax.Array, cfg: ModelConfig):
    """Lattice mixture at an o_W row: log-weights (Kl,), mu and sigma (Kl, 6)."""
    s, K = cfg.atom_types, cfg.Kl
    logw = jax.nn.log_softmax(h[..., s:s + K], axis=-1)
    mu = h[..., s + K:s + 7 * K].reshape(*h.shape[:-1], K, 6)
    sigma = jax.nn.softplus(h[..., s + 7 * K:s + 13 * K]).reshape(*h.shape[:-1], K, 6) + cfg.sigmamin
    return logw, mu, sigma


def von_mises_logpdf(theta, loc, kappa):
    """log vM density in the angle theta (numpyro's form, with the scaled Bessel i0e)."""
    return kappa * (jnp.cos(theta - loc) - 1.0) - jnp.log(2 * jnp.pi * i0e(kappa))


def coord_logp(x: jax.Array, logw, loc, kappa) -> jax.Array:
    """Mixture log-density of fractional coordinate x, as a density in theta = 2pi(x - 1/2)."""
    theta = (x - 0.5) * 2 * jnp.pi
    return logsumexp(logw + von_mises_logpdf(theta[..., None], loc, kappa), axis=-1)


def lattice_logp_per_dim(L_b6: jax.Array, logw, mu, sigma) -> jax.Array:
    """(…, 6): each dimension its own mixture with shared weights (as the likelihood upstream)."""
    return logsumexp(logw[..., :, None] + norm.logpdf(L_b6[..., None, :], mu, sigma), axis=-2)


# ---------------------------------------------------------------------- whole sequences
def _take(logp, idx):
    return jnp.take_along_axis(logp, idx[..., None].astype(jnp.int32), axis=-1)[..., 0]


def normalized_outputs(h_bTo: jax.Array, G_b, A_bn, W_bn, cfg: ModelConfig) -> dict:
    """Masked, normalised heads from the raw network output (B, 5n+1, O)."""
    n = W_bn.shape[1]
    W_prev = jnp.concatenate([jnp.zeros_like(W_bn[:, :1]), W_bn[:, :-1]], axis=1)
    w_rows = h_bTo[:, 0::5][:, :n, :cfg.wyck_types]
    logp_w_first = first_w_logprob(w_rows[:, 0], G_b)
    logp_w_next = next_w_logprob(w_rows[:, 1:], G_b, W_prev[:, 1:])
    al = h_bTo[:, 1::5]
    return {
        "w": jnp.concatenate([logp_w_first[:, None], logp_w_next], axis=1),  # (B, n, wyck)
        "a": a_logprob(al[..., :cfg.atom_types], W_bn),  # (B, n, atoms)
        "lattice": lattice_params(al, cfg),  # per row; read out at the first pad
        "xyz": [coord_params(h_bTo[:, 2 + c::5], cfg) for c in range(3)],
    }


def logp_terms(model, G, L, XYZ, A, W, *, deterministic: bool = True) -> dict:
    """The four log-likelihood terms, each (B,), exactly as the public `logp_fn`."""
    cfg = model.cfg
    G, A, W = (jnp.asarray(v).astype(jnp.int32) for v in (G, A, W))
    h = model(G, jnp.asarray(XYZ), A, W, deterministic=deterministic)
    XYZ = jnp.asarray(XYZ, h.dtype)
    L = jnp.asarray(L, h.dtype)
    out = normalized_outputs(h, G, A, W, cfg)
    logp_w = _take(out["w"], W).sum(-1)
    logp_a = _take(out["a"], A).sum(-1)

    fc = _t("fc_mask")[G[:, None] - 1, W] & (W > 0)[..., None]  # (B, n, 3)
    logp_xyz = 0.0
    for c, (logw, loc, kappa) in enumerate(out["xyz"]):
        lp = coord_logp(XYZ[..., c], logw, loc, kappa)
        logp_xyz = logp_xyz + jnp.where(fc[..., c], lp, 0.0).sum(-1)

    # lattice: read at the output of the first pad W token (clamped like jnp indexing upstream)
    num_sites = jnp.minimum((A != 0).sum(-1), W.shape[1] - 1)
    logw, mu, sigma = (jnp.take_along_axis(p, num_sites.reshape((-1,) + (1,) * (p.ndim - 1)),
                                           axis=1)[:, 0] for p in out["lattice"])
    lp_l = lattice_logp_per_dim(L, logw, mu, sigma)
    logp_l = jnp.where(_t("lattice_mask")[G - 1], lp_l, 0.0).sum(-1)
    return {"logp_w": logp_w, "logp_xyz": logp_xyz, "logp_a": logp_a, "logp_l": logp_l}


def loss_fn(model, batch: dict, *, deterministic: bool) -> tuple[jax.Array, dict]:
    """-mean(logp_w + logp_xyz + logp_a + logp_l) (all lambdas 1, as upstream) and
    the per-term mean NLLs `loss_w, loss_xyz, loss_a, loss_l`."""
    t = logp_terms(model, batch["G"], batch["L"], batch["XYZ"], batch["A"], batch["W"],
                   deterministic=deterministic)
    aux = {"loss_" + k[5:]: -jnp.mean(v) for k, v in t.items()}
    return sum(aux.values()), aux


@functools.partial(nnx.jit, static_argnames="deterministic")
def logp_terms_jit(model, G, L, XYZ, A, W, *, deterministic: bool = True) -> dict:
    """`logp_terms` compiled as one program (recompiles per batch shape / dtype)."""
    return logp_terms(model, G, L, XYZ, A, W, deterministic=deterministic)
