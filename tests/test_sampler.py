"""KV-cached sampler: draws from the model's distribution and scores what it draws."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from flax import nnx

from crystalrl import wyckoff
from crystalrl.model import likelihood as lk
from crystalrl.model import sampler as sp
from crystalrl.model.config import ModelConfig
from crystalrl.model.published import load_haiku_params
from crystalrl.model.store import build_model
from crystalrl.model.von_mises import sample_von_mises_centered

TERMS = ("logp_w", "logp_xyz", "logp_a", "logp_l")
GROUPS = [1, 2, 14, 25, 62, 99, 139, 166, 194, 225]  # all seven crystal systems


@pytest.fixture(scope="module")
def small(shared_reference):
    cfg = ModelConfig.from_dict(json.loads((shared_reference / "crystalformer_small_config.json").read_text()))
    return cfg, load_haiku_params(shared_reference / "crystalformer_small_params.npz", cfg)


@pytest.fixture(scope="module")
def drawn64(small):
    """300 float64 samples over 10 space groups with the imported (non-trivial) params."""
    cfg, params = small
    with jax.enable_x64(True):
        model = build_model(cfg)
        nnx.update(model, jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params))
        G = np.repeat(GROUPS, 30)
        s = sp.sample(model, jax.random.key(7), G, dtype=jnp.float64)
        rescored = lk.logp_terms_jit(model, s.G, s.L, s.XYZ, s.A, s.W)
        first_w = lk.first_w_logprob(model.first_w_logits(jnp.asarray(GROUPS)), jnp.asarray(GROUPS))
        return s, {k: np.asarray(v) for k, v in rescored.items()}, np.asarray(first_w)


@pytest.mark.slow
def test_sampled_logp_equals_full_forward_rescoring(drawn64):
    s, rescored, _ = drawn64
    for k in TERMS:
        np.testing.assert_allclose(getattr(s, k), rescored[k], atol=1e-4, rtol=0, err_msg=k)
    assert np.all(np.isfinite(s.logp))
    assert np.allclose(s.logp, sum(getattr(s, k) for k in TERMS))


@pytest.mark.slow
def test_samples_are_legal_token_sequences(drawn64):
    s, _, _ = drawn64
    G, W, A, XYZ, L = s.G, s.W, s.A, s.XYZ, s.L
    n_sites = (W > 0).sum(1)
    assert np.all(W[:, 0] > 0) and np.all(W[:, -1] == 0)  # never empty; last slot a pad
    assert np.all((A > 0) == (W > 0))
    dof0, wmax, op0 = wyckoff.dof0_table(), wyckoff.wmax_table(), wyckoff.op0_table()
    for b in range(len(G)):
        g, w = G[b], W[b, :n_sites[b]]
        assert np.all(W[b, n_sites[b]:] == 0), "pads are absorbing"
        assert np.all(w <= wmax[g - 1])
        for prev, nxt in zip(w[:-1], w[1:]):
            assert nxt > prev if dof0[g - 1, prev] else nxt >= prev
        for i, wi in enumerate(w):  # every representative is a fixed point of op0
            x = XYZ[b, i]
            y = op0[g - 1, wi, :, :3] @ x + op0[g - 1, wi, :, 3]
            d = (y - x) - np.rint(y - x)
            assert np.abs(d).max() < 1e-6, (g, wi, x)
    np.testing.assert_allclose(L, wyckoff.symmetrize_lattice(G, L, degrees=False))
    np.testing.assert_array_equal(s.valid_lattice, sp.lattice_is_valid(L))
    assert np.array_equal(s.n_atoms, wyckoff.mult_table()[G[:, None] - 1, W].sum(1))
    assert len(np.unique(G)) == len(GROUPS)


@pytest.mark.slow
def test_first_letter_frequencies_follow_the_model(drawn64):
    """Empirical W_1 counts match the model's probabilities (a wrong sampler fails)."""
    s, _, first_w = drawn64
    for j, g in enumerate(GROUPS):
        counts = np.bincount(s.W[s.G == g, 0], minlength=first_w.shape[1])
        p = np.exp(first_w[j])
        n = counts.sum()
        chi2 = np.sum((counts - n * p) ** 2 / np.maximum(n * p, 1e-12))
        dof = int((p > 0).sum()) - 1
        assert chi2 < dof + 6 * np.sqrt(2 * dof) + 10, (g, counts, np.round(n * p, 1))


def test_float32_sampler_reproducible_and_scored(small):
    cfg, params = small
    model = build_model(cfg)
    nnx.update(model, params)
    G = np.array([225, 194, 62, 14] * 8)
    li_o = sp.element_mask(["Li", "O"], cfg)
    a = sp.sample(model, jax.random.key(1), G, atom_mask=li_o, temperature=0.8, top_p=0.95)
    b = sp.sample(model, jax.random.key(1), G, atom_mask=li_o, temperature=0.8, top_p=0.95)
    c = sp.sample(model, jax.random.key(2), G, atom_mask=li_o, temperature=0.8, top_p=0.95)
    for k in ("W", "A", "XYZ", "L", "logp"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert not np.array_equal(a.XYZ, c.XYZ)
    assert set(np.unique(a.A)) <= {0, 3, 8}
    assert a.L.dtype == np.float64 and a.logp.shape == (32,)
    r = lk.logp_terms_jit(model, a.G, a.L, a.XYZ, a.A, a.W)
    for k in TERMS:  # float32 both sides: agree to float32 rounding
        np.testing.assert_allclose(getattr(a, k), np.asarray(r[k]), rtol=1e-5, atol=1e-3, err_msg=k)


def test_sample_rejects_bad_arguments(small):
    cfg, _ = small
    model = nnx.eval_shape(lambda: build_model(cfg))
    with pytest.raises(ValueError, match="1..230"):
        sp.sample(model, jax.random.key(0), [0, 5])
    with pytest.raises(ValueError, match="no element"):
        sp.sample(model, jax.random.key(0), [5], atom_mask=np.zeros(cfg.atom_types, bool))
    with pytest.raises(ValueError, match="Xx"):
        sp.element_mask(["Xx"], cfg)


def test_top_p_keeps_the_nucleus():
    logp = jnp.log(jnp.asarray([[0.1, 0.6, 0.3]] * 4000))
    keys = jax.random.key(0)
    x = np.asarray(sp.sample_top_p(keys, logp, 1.0, 0.5, True))
    assert set(np.unique(x)) == {1}  # exclusive mass before 0.3 is 0.6 > 0.5
    x = np.asarray(sp.sample_top_p(keys, logp, 1.0, 0.65, True))
    assert set(np.unique(x)) == {1, 2}
    frac = np.mean(x == 1)
    assert abs(frac - 2 / 3) < 0.04  # renormalised 0.6 : 0.3


@pytest.mark.parametrize("kappa", [0.01, 1.0, 20.0])
def test_von_mises_moments(kappa):
    th = np.asarray(sample_von_mises_centered(jax.random.key(3), jnp.full((20000,), kappa)))
    assert np.all(np.abs(th) <= np.pi)
    expect = scipy.special.i1(kappa) / scipy.special.i0(kappa)  # E cos(theta)
    assert abs(np.mean(np.cos(th)) - expect) < 0.02
    assert abs(np.mean(np.sin(th))) < 0.02


def test_denormalize_lattice(shared_reference):
    ref = np.load(shared_reference / "crystalformer_logp_mini.npz")
    out = sp.denormalize_lattice(ref["G"][:1], ref["L"][:1], ref["W"][:1])
    # row 0: SG 25, five 1-fold sites -> N = 5; a = 2.37215 * 5^(1/3)
    np.testing.assert_allclose(out[0, :3], 2.37215 * 5 ** (1 / 3), atol=1e-4)
    np.testing.assert_allclose(out[0, 3:], 90.0, atol=1e-3)


@pytest.mark.slow
def test_sample_stage(small, tmp_path):
    """The sample stage writes the contract's Parquet; rows are never dropped."""
    import pandas as pd

    from crystalrl.model.store import save_model
    from crystalrl.stages import run_stage

    cfg, params = small
    model = build_model(cfg)
    nnx.update(model, params)
    save_model(tmp_path / "model", model, cfg)
    pd.DataFrame({"G": [225, 225, 194, 62]}).to_parquet(tmp_path / "tokens.parquet")
    out = tmp_path / "samples" / "base" / "dist.parquet"
    run_stage("sample", dict(model=tmp_path / "model", train_tokens=tmp_path / "tokens.parquet"),
              dict(samples=out), dict(model_name="base", sample=dict(
                  n_samples=20, spacegroups="train", batch_size=16, temperature=1.0, top_p=1.0,
                  seed=3, elements=["Na", "Cl"])), log=tmp_path / "sample.log")
    df = pd.read_parquet(out)
    assert list(df.columns) == ["sample_id", "G", "L", "XYZ", "A", "W", "cif", "logp",
                                "n_atoms", "status", "seconds"]
    assert len(df) == 20 and df["sample_id"].is_unique
    assert set(df["G"]) <= {225, 194, 62}
    assert all(set(a[a > 0]) <= {11, 17} for a in df["A"])
    ok = df["status"] == "ok"
    assert df.loc[ok, "cif"].notna().all() and df.loc[~ok, "cif"].isna().all()
    assert set(df.loc[~ok, "status"].str.split(":").str[0]) <= {"invalid_lattice", "decode_failed"}
    assert np.isfinite(df["logp"]).all() and (df["seconds"] > 0).all()
