"""CrystalFormer (NNX) against the public Haiku implementation's reference vectors."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crystalrl.model import likelihood as lk
from crystalrl.model.config import ModelConfig
from crystalrl.model.haiku_import import haiku_names, import_into
from crystalrl.model.published import load_haiku_params, read_params
from crystalrl.model.store import build_model
from crystalrl.model.transformer import CrystalFormer, count_params

TERMS = ("logp_w", "logp_xyz", "logp_a", "logp_l")


def _abstract(cfg):
    return nnx.eval_shape(lambda: CrystalFormer(cfg, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("kw, expected", [
    ({}, 4_833_575),  # paper / Alex-20 config
    (dict(num_layers=4, num_heads=8, key_size=32), 454_439),
    (dict(num_layers=4, num_heads=4, key_size=8, model_size=16, embed_size=16), 40_295),
])
def test_parameter_count(kw, expected):
    assert count_params(_abstract(ModelConfig.from_dict(kw))) == expected


def test_config_roundtrip_and_unknown_key():
    cfg = ModelConfig.from_dict(dict(num_layers=3, dropout_rate=0.0))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(KeyError, match="num_layer"):
        ModelConfig.from_dict({"num_layer": 3})
    assert ModelConfig.from_dict({}).output_size == 171


@pytest.fixture(scope="module")
def small(shared_reference):
    cfg = ModelConfig.from_dict(json.loads((shared_reference / "crystalformer_small_config.json").read_text()))
    params = load_haiku_params(shared_reference / "crystalformer_small_params.npz", cfg)
    return cfg, params


@pytest.fixture(scope="module")
def model64(small):
    """One float64 model for the module; tests swap parameters in with nnx.update."""
    cfg, _ = small
    with jax.enable_x64(True):
        return build_model(cfg)


def _model64(model, params):
    """`model` holding `params` in float64 (call inside jax.enable_x64)."""
    nnx.update(model, jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params))
    return model


@pytest.mark.parametrize("name, mean_total", [
    ("mini", -59.64043), pytest.param("alex", -49.86114, marks=pytest.mark.slow)])
def test_logp_matches_public_code(small, model64, shared_reference, name, mean_total):
    ref = np.load(shared_reference / f"crystalformer_logp_{name}.npz")
    cfg, params = small
    with jax.enable_x64(True):
        t = lk.logp_terms_jit(_model64(model64, params), ref["G"], ref["L"], ref["XYZ"], ref["A"], ref["W"])
        t = {k: np.asarray(v) for k, v in t.items()}
    for k in TERMS:
        assert t[k].dtype == np.float64
        np.testing.assert_allclose(t[k], ref[k], atol=1e-4, rtol=0, err_msg=f"{name} {k}")
    assert abs(np.mean(sum(t.values())) - mean_total) < 1e-4


@pytest.mark.parametrize("name", ["mini", pytest.param("alex", marks=pytest.mark.slow)])
def test_zero_params_logp(small, model64, shared_reference, name):
    """Zero weights: uniform heads, so this pins every mask and density convention."""
    ref = np.load(shared_reference / f"crystalformer_logp_{name}.npz")
    cfg, params = small
    with jax.enable_x64(True):
        model = _model64(model64, jax.tree.map(jnp.zeros_like, params))
        t = lk.logp_terms_jit(model, ref["G"], ref["L"], ref["XYZ"], ref["A"], ref["W"])
        for k in TERMS:
            np.testing.assert_allclose(np.asarray(t[k]), ref["zero_" + k], atol=1e-6, rtol=0,
                                       err_msg=f"{name} {k}")


def test_outputs_match_public_network(small, model64, shared_reference):
    """Heads after masks/normalisation equal the public network's output rows."""
    ref = np.load(shared_reference / "crystalformer_logp_mini.npz")
    o = ref["out_first4"]  # (4, 106, 171)
    cfg, params = small
    with jax.enable_x64(True):
        G, XYZ, A, W = (jnp.asarray(ref[k][:4]) for k in ("G", "XYZ", "A", "W"))
        h = nnx.jit(lambda m: m(G, XYZ, A, W, deterministic=True))(_model64(model64, params))
        out = lk.normalized_outputs(h, G, A, W, cfg)
        ours = {
            "w": (np.asarray(out["w"]), o[:, 0:105:5, :28]),
            "a": (np.asarray(out["a"]), o[:, 1::5, :119]),
            "lat_logw": (np.asarray(out["lattice"][0]), o[:, 1::5, 119:123]),
            "lat_mu": (np.asarray(out["lattice"][1]).reshape(4, 21, 24), o[:, 1::5, 123:147]),
            "lat_sigma": (np.asarray(out["lattice"][2]).reshape(4, 21, 24), o[:, 1::5, 147:171]),
        }
        for c in range(3):
            for j, part in enumerate(("logw", "loc", "kappa")):
                ours[f"xyz{c}_{part}"] = (np.asarray(out["xyz"][c][j]), o[:, 2 + c::5, 16 * j:16 * j + 16])
    for k, (mine, theirs) in ours.items():
        masked = theirs < -1e9  # upstream marks masked entries with -1e10
        assert np.array_equal(~np.isfinite(mine), masked), k
        np.testing.assert_allclose(mine[~masked], theirs[~masked], atol=1e-4, rtol=0, err_msg=k)


def test_importer_rejects_mismatch(small, shared_reference):
    cfg, _ = small
    params = read_params(shared_reference / "crystalformer_small_params.npz")
    assert set(params) == set(haiku_names(cfg))
    model = _abstract(cfg)
    bad = dict(params)
    del bad["linear_3/w"]
    with pytest.raises(KeyError, match="linear_3/w"):
        import_into(model, bad)
    bad = dict(params, **{"linear_3/w": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match="linear_3/w"):
        import_into(model, bad)
    with pytest.raises(KeyError):  # a 16-layer config cannot take 4-layer params
        import_into(_abstract(ModelConfig.from_dict({})), params)


def test_masks_exact_in_float32_and_gradients_finite(small, shared_reference):
    """where-masks keep O(1) logits intact in float32 (no 1e10 shift) and give finite grads."""
    logits = jnp.asarray([[0.3, 1.7, -0.4, 2.2, 0.0]], jnp.float32)
    lp = lk.first_w_logprob(logits, jnp.asarray([2]))  # P-1: wmax = 8, so letters 1..4 here
    expect = jax.nn.log_softmax(logits[:, 1:])
    np.testing.assert_allclose(np.asarray(lp[:, 1:]), np.asarray(expect), atol=1e-7)
    assert np.isneginf(np.asarray(lp[0, 0]))

    ref = np.load(shared_reference / "crystalformer_logp_mini.npz")
    cfg, params = small
    model = build_model(cfg)
    nnx.update(model, params)
    batch = {k: jnp.asarray(ref[k][:8]) for k in ("G", "L", "XYZ", "A", "W")}
    grad_fn = nnx.jit(nnx.value_and_grad(
        lambda m: lk.loss_fn(m, batch, deterministic=True), has_aux=True))
    (loss, aux), grads = grad_fn(model)
    assert np.isfinite(float(loss))
    ref_loss = -np.mean(sum(ref[k][:8] for k in TERMS))
    assert abs(float(loss) - ref_loss) < 1e-3 * abs(ref_loss)
    assert abs(float(sum(aux.values())) - float(loss)) < 1e-4
    leaves = jax.tree.leaves(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert any(np.abs(np.asarray(g)).max() > 0 for g in leaves)


def test_kv_cache_step_equals_full_forward(small, shared_reference):
    """Feeding the tokens one by one through `step` reproduces the full pass's rows."""
    ref = np.load(shared_reference / "crystalformer_logp_mini.npz")
    cfg, params = small
    model = build_model(cfg)
    nnx.update(model, params)
    G, XYZ, A, W = (jnp.asarray(ref[k][:3]) for k in ("G", "XYZ", "A", "W"))
    full = np.asarray(model(G, XYZ.astype(jnp.float32), A, W, deterministic=True))
    cache = model.init_cache(3)
    step = jax.jit(lambda h, c, p: model.step(h, c, p))
    rows = []
    for t in range(cfg.seq_len):
        i, kind = divmod(t, 5)
        if kind == 0:
            h = model.embed_w(G, W[:, i])
        elif kind == 1:
            h = model.embed_a(G, A[:, i])
        else:
            h = model.embed_coord(G, XYZ[:, i, kind - 2].astype(jnp.float32), kind - 2)
        out, cache = step(h, cache, jnp.asarray(t))
        rows.append(np.asarray(out))
    np.testing.assert_allclose(np.stack(rows, 1), full[:, 1:], atol=2e-5)
