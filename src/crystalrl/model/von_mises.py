"""von Mises sampling in JAX (Best & Fisher 1979 rejection sampler, as numpyro/TFP).

jax.random has no von Mises; this is numpyro's algorithm with its small bug fixed
(the proposal sign `u` is now frozen once a row is accepted, upstream it kept
being overwritten by later proposals).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Below this concentration the exact proposal parameter loses precision (TFP's cutoffs).
_S_CUTOFF = {jnp.dtype(jnp.float32): 2e-2, jnp.dtype(jnp.float64): 1.2e-4}
MAX_TRIES = 100  # acceptance rate is >= 0.65 for every kappa, so 100 tries never run out


def sample_von_mises_centered(key: jax.Array, kappa: jax.Array) -> jax.Array:
    """Angles in [-pi, pi] from vM(0, kappa), one per entry of `kappa` (kappa > 0)."""
    dtype = kappa.dtype
    kappa = jnp.maximum(kappa, jnp.asarray(1e-8, dtype))
    r = 1.0 + jnp.sqrt(1.0 + 4.0 * kappa**2)
    rho = (r - jnp.sqrt(2.0 * r)) / (2.0 * kappa)
    s = jnp.where(kappa > _S_CUTOFF[jnp.dtype(dtype)], (1.0 + rho**2) / (2.0 * rho), 1.0 / kappa)

    def cond(c):
        i, _, done, _, _ = c
        return (i < MAX_TRIES) & ~jnp.all(done)

    def body(c):
        i, key, done, u_old, w_old = c
        key, ku, kv = jax.random.split(key, 3)
        u = jax.random.uniform(ku, kappa.shape, dtype, -1.0, 1.0)
        z = jnp.cos(jnp.pi * u)
        w = (1.0 + s * z) / (s + z)
        y = kappa * (s - w)
        v = jax.random.uniform(kv, kappa.shape, dtype)
        accept = (y * (2.0 - y) >= v) | (jnp.log(y / v) + 1.0 >= y)
        new = accept & ~done
        return (i + 1, key, done | accept, jnp.where(new, u, u_old), jnp.where(new, w, w_old))

    zeros = jnp.zeros(kappa.shape, dtype)
    _, _, _, u, w = jax.lax.while_loop(
        cond, body, (jnp.array(0), key, jnp.zeros(kappa.shape, bool), zeros, zeros))
    return jnp.sign(u) * jnp.arccos(jnp.clip(w, -1.0, 1.0))
