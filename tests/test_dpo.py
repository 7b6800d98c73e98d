"""DPO and IPO (`ppo.algorithm: dpo | ipo`, `crystalrl.rl.dpo`) and the entropy bonus of the
on-policy algorithms: the loss is the public code's, training on a toy preference with a known
optimum (chosen = the same crystal with every site oxygen) moves the model toward oxygen,
resumption is exact, pairs from a relaxed pool pair within a space group, config errors are named."""
from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from crystalrl.checks import check_config
from crystalrl.config import validate_config
from crystalrl.model.sampler import sample
from crystalrl.model.store import build_model, params_of
from crystalrl.rl.dpo import _logp_fn, batch_rows, pairs_from_pool, preference_loss, run_dpo, score
from crystalrl.rl.ppo import PPOConfig, run_ppo
from crystalrl.spacegroups import spacegroup_probs
from crystalrl.train.loop import data_mesh

from test_ppo import SMALL, TARGET, oxygen_site_fraction, tokens_of


def test_loss_is_the_public_codes():
    """public make_dpo_loss: logits = pi_logratios - ref_logratios; DPO -(1-eps) log sig(beta z)
    - eps log sig(-beta z); IPO (z - 1/(2 beta))^2."""
    lp_c, lp_r, ref_c, ref_r = (np.array(v, np.float32) for v in ([-10.0, -3.0], [-12.0, -2.0], [-11.0, -3.0],
                                                                   [-11.0, -3.0]))
    z = (lp_c - ref_c) - (lp_r - ref_r)  # [2, -1]
    beta, eps = 0.5, 0.2

    def log_sig(x):
        return -np.log1p(np.exp(-x))

    loss, h = preference_loss(lp_c, lp_r, ref_c, ref_r, beta, eps)
    np.testing.assert_allclose(h, beta * z, rtol=1e-6)
    np.testing.assert_allclose(loss, -(1 - eps) * log_sig(beta * z) - eps * log_sig(-beta * z), rtol=1e-6)
    plain, _ = preference_loss(lp_c, lp_r, ref_c, ref_r, beta)
    np.testing.assert_allclose(plain, -log_sig(beta * z), rtol=1e-6)
    ipo, _ = preference_loss(lp_c, lp_r, ref_c, ref_r, beta, ipo=True)
    np.testing.assert_allclose(ipo, (z - 1 / (2 * beta)) ** 2, rtol=1e-6)
    assert float(ipo[0]) == pytest.approx(1.0)  # z = 2, target 1/(2 * 0.5) = 1
    # at the start model (z = 0) DPO's loss is log 2 whatever beta; smoothing turns it around for h < 0
    zero, _ = preference_loss(ref_c, ref_r, ref_c, ref_r, 3.0, 0.3)
    np.testing.assert_allclose(zero, np.log(2), rtol=1e-6)


def test_batches_cover_each_epoch_once():
    rows = np.concatenate([batch_rows(0, s, 4, 10) for s in range(5)])  # 20 rows: two epochs of 10
    assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:]) == list(range(10))
    np.testing.assert_array_equal(batch_rows(0, 3, 4, 10), rows[12:16])


def toy_pairs(n: int, seed: int):
    """n pairs from the start model's own samples: rejected as sampled, chosen the same crystal
    with every occupied site oxygen (the optimum of the toy preference: all oxygen)."""
    model = build_model(SMALL, seed=0)
    G = np.random.default_rng(seed).choice([1, 2, 225], n)
    out = sample(model, jax.random.key(100 + seed), G)
    rejected = {k: np.asarray(v) for k, v in out.tokens().items()}
    chosen = dict(rejected, A=np.where(rejected["W"] > 0, TARGET, 0))
    return chosen, rejected


def oxygen_share(model, n=96) -> float:
    out = sample(model, jax.random.key(7), np.resize([1, 2, 225], n))
    return float(oxygen_site_fraction(tokens_of(out)).reward.mean())


def heldout_h(model, reference, chosen, rejected, beta):
    """h of each pair under `model` against `reference` (the loop's own scoring)."""
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    logp = _logp_fn(graphdef, rest, data_mesh(jax.local_devices()[:1]))
    lp = [score(logp, params_of(m), side, 32) for m in (model, reference) for side in (chosen, rejected)]
    return beta * ((lp[0] - lp[2]) - (lp[1] - lp[3]))


def _dpo(algorithm, seed, steps=30, beta=0.1, **kw):
    chosen, rejected = toy_pairs(96, seed)
    cfg = PPOConfig.from_dict(dict(algorithm=algorithm, pairs="pool", steps=steps, batch_size=32, lr=3e-3,
                                   seed=seed, ckpt_every=2, dpo_beta=beta))
    policy, m = run_dpo(build_model(SMALL, seed=0), build_model(SMALL, seed=0), chosen, rejected, cfg, **kw)
    return policy, m


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, beta", [("dpo", 0.1), ("ipo", 0.02)])  # ipo: log-ratio margin 1/(2 beta) = 25
def test_preference_training_moves_the_model_toward_the_chosen_side(algorithm, beta):
    start = oxygen_share(build_model(SMALL, seed=0))
    assert start < 0.05  # a random model puts ~1/118 of its sites on oxygen
    for seed in (0, 1, 2):
        policy, m = _dpo(algorithm, seed, beta=beta)
        held_c, held_r = toy_pairs(64, seed + 10)  # pairs the run never saw
        h = heldout_h(policy, build_model(SMALL, seed=0), held_c, held_r, beta)
        end = oxygen_share(policy)
        print(algorithm, seed, "train accuracy first/last", m["accuracy"].iloc[0], m["accuracy"].iloc[-3:].mean(),
              "margin first/last", m["margin"].iloc[0], m["margin"].iloc[-3:].mean(),
              "held-out accuracy", float((h > 0).mean()), "oxygen share", start, "->", end)
        assert abs(m["margin"].iloc[0]) < 1e-5  # the start model is the reference: h = 0 up to rounding
        # IPO drives h toward beta / (2 beta) = 0.5 and no further, whatever beta; DPO keeps raising it
        assert m["accuracy"].iloc[-3:].mean() > 0.9 and m["margin"].iloc[-3:].mean() > m["margin"].iloc[:3].mean() + 0.1
        if algorithm == "ipo":
            assert m["margin"].iloc[-3:].mean() < 0.8
        assert (h > 0).mean() > 0.9
        assert end > start + 0.05 and end > 4 * start, (start, end)  # seed noise of start: ~0.005


def test_dpo_resume_after_kill_logs_the_same_metrics(tmp_path):
    _, full = _dpo("dpo", 0, steps=5, ckpt_dir=str(tmp_path / "a"))
    _dpo("dpo", 0, steps=5, ckpt_dir=str(tmp_path / "b"), stop_after=3)  # killed after step 3: checkpoint at 2
    _, resumed = _dpo("dpo", 0, steps=5, ckpt_dir=str(tmp_path / "b"))
    cols = [c for c in full.columns if not c.startswith("time_")]
    assert {"loss", "margin", "accuracy", "kl", "reward_mean"} <= set(cols) and len(resumed) == 5
    np.testing.assert_array_equal(resumed[cols].to_numpy(float), full[cols].to_numpy(float))


def test_label_smoothing_and_beta_change_the_run():
    chosen, rejected = toy_pairs(32, 0)
    runs = {}
    for name, kw in (("plain", {}), ("smooth", dict(label_smoothing=0.3)), ("beta", dict(dpo_beta=1.0))):
        cfg = PPOConfig.from_dict(dict(algorithm="dpo", pairs="pool", steps=3, batch_size=32, lr=3e-3, seed=0,
                                       **{"dpo_beta": 0.1, **kw}))
        runs[name] = run_dpo(build_model(SMALL, seed=0), build_model(SMALL, seed=0), chosen, rejected, cfg)[1]
    assert runs["plain"]["loss"].iloc[0] == pytest.approx(np.log(2), rel=1e-5)  # z = 0 at step 1
    for other in ("smooth", "beta"):
        assert not np.allclose(runs[other]["loss"].iloc[1:], runs["plain"]["loss"].iloc[1:])


def test_dpo_gamma_adds_the_chosen_likelihood_bonus_of_the_public_code():
    """loss = DPO loss - gamma * mean log p(chosen) (the public make_dpo_loss): at step 1 the policy is
    the reference (DPO loss log 2), so the loss is log 2 - gamma * chosen_logp; and gamma keeps the
    chosen crystals likelier than DPO alone does."""
    chosen, rejected = toy_pairs(32, 0)
    runs = {}
    for gamma in (0.0, 0.5):
        cfg = PPOConfig.from_dict(dict(algorithm="dpo", pairs="pool", steps=6, batch_size=32, lr=3e-3, seed=0,
                                       dpo_gamma=gamma))
        runs[gamma] = run_dpo(build_model(SMALL, seed=0), build_model(SMALL, seed=0), chosen, rejected, cfg)[1]
    first = runs[0.5].iloc[0]
    assert first["loss"] == pytest.approx(np.log(2) - 0.5 * first["chosen_logp"], rel=1e-5)
    assert runs[0.0]["loss"].iloc[0] == pytest.approx(np.log(2), rel=1e-5)
    assert runs[0.5]["chosen_logp"].iloc[-1] > runs[0.0]["chosen_logp"].iloc[-1]


def test_keys_added_later_count_in_a_runs_identity_only_when_switched_on():
    """A run that leaves dpo_gamma and the buffer off keeps the identity it had before those keys
    existed (its checkpoints resume); switched on, they make it another run."""
    from crystalrl.rl.ppo import run_settings

    plain = run_settings(PPOConfig.from_dict({}))
    assert not {"dpo_gamma", "buffer_gamma", "buffer_size", "steps", "ckpt_every"} & set(plain)
    assert run_settings(PPOConfig.from_dict(dict(steps=9, ckpt_every=2))) == plain  # a run can be extended
    assert run_settings(PPOConfig.from_dict(dict(dpo_gamma=0.5)))["dpo_gamma"] == 0.5
    assert run_settings(PPOConfig.from_dict(dict(buffer_gamma=0.5)))["buffer_size"] == 1024


def test_pairs_from_pool_pair_low_and_high_e_hull_within_a_space_group():
    def tok(i):
        return dict(L=[1.0] * 6, XYZ=[0.0] * 6, A=[i + 1, 0], W=[1, 0])
    samples = pd.DataFrame([dict(sample_id=f"s{i}", G=g, **tok(i)) for i, g in enumerate([1, 1, 1, 1, 225, 225, 2])])
    relaxed = pd.DataFrame(dict(sample_id=[f"s{i}" for i in range(7)],
                                e_hull_final=[0.0, 0.5, 0.05, 0.3, 0.2, 0.25, 0.0],
                                status=["ok"] * 7))
    chosen, rejected, table = pairs_from_pool(samples, relaxed, min_gap=0.1)
    # group 1: s0 (0.0) with s1 (0.5), s2 (0.05) with s3 (0.3); group 225's gap 0.05 is too small; s6 alone
    assert table[["chosen_id", "rejected_id"]].values.tolist() == [["s0", "s1"], ["s2", "s3"]]
    np.testing.assert_array_equal(chosen["A"][:, 0], [1, 3])
    np.testing.assert_array_equal(rejected["G"], [1, 1])
    _, _, capped = pairs_from_pool(samples, relaxed, min_gap=0.1, chosen_max=0.01)
    assert capped["chosen_id"].tolist() == ["s0"]
    with pytest.raises(ValueError, match="config key 'ppo.pairs'"):
        pairs_from_pool(samples, relaxed, min_gap=1.0)


@pytest.mark.slow
def test_entropy_bonus_raises_the_entropy_of_ppo_samples():
    """entropy_coef > 0 keeps the samples more diverse (higher -log p) than without it; the
    default 0 is the step as before (tests/test_guards.py's stored metrics)."""
    ent = {}
    for coef in (0.0, 0.05):
        cfg = PPOConfig.from_dict(dict(beta=0.0, steps=15, batch_size=48, lr=3e-3, ppo_epochs=3, seed=3,
                                       entropy_coef=coef))
        _, m = run_ppo(build_model(SMALL, seed=0), build_model(SMALL, seed=0), oxygen_site_fraction,
                       spacegroup_probs([1, 2, 225]), cfg, decode=tokens_of)
        ent[coef] = m["entropy"].iloc[-3:].mean()
        print(coef, m[["step", "reward_mean", "entropy"]].to_string())
    assert ent[0.05] > ent[0.0] + 5, ent


@pytest.mark.parametrize("run, key", [
    ({"algorithm": "dpo"}, "ppo_runs.ehull.pairs"),
    ({"algorithm": "ipo", "pairs": "no/such/pairs.parquet"}, "ppo_runs.ehull.pairs"),
    ({"algorithm": "dpo", "pairs": "pool", "label_smoothing": 0.7}, "ppo_runs.ehull.label_smoothing"),
])
def test_dpo_config_errors_name_the_key(run, key, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh work dir
    cfg = validate_config({"ppo_runs": {"ehull": run}})
    problems = "\n".join(check_config(cfg))
    assert f"config key '{key}'" in problems, problems


def test_dpo_with_pool_pairs_passes_the_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = validate_config({"ppo_runs": {"ehull": {"algorithm": "dpo", "pairs": "pool"}}})
    assert not [p for p in check_config(cfg) if "ppo" in p]


def test_a_dpo_run_reads_the_relaxed_pool_and_a_dpo_run_without_pairs_stops_the_dry_run(tmp_path):
    from test_workflow import make_workdir, snakemake

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    runs = {"ppo": {"runs": ["ehull", "pref"]}, "ppo_runs": {"pref": {"algorithm": "dpo", "pairs": "pool"}}}
    wd = make_workdir(tmp_path / "a", runs)
    out = snakemake(wd, "-n", "-p", "--forceall", "results/demo/models/ppo_pref")
    assert "results/demo/relax/base/sft_pool.parquet" in out and "results/demo/samples/base/sft_pool.parquet" in out
    bad = make_workdir(tmp_path / "b", {"ppo": {"runs": ["pref"]}, "ppo_runs": {"pref": {"algorithm": "ipo"}}})
    with pytest.raises(AssertionError, match="config key 'ppo_runs.pref.pairs'"):
        snakemake(bad, "-n")


def test_the_ppo_stage_runs_dpo_on_pool_pairs_and_writes_a_runs_artifacts(tmp_path):
    from crystalrl.model.store import load_model, save_model
    from crystalrl.stages import run_stage

    save_model(tmp_path / "base", build_model(SMALL, seed=0), SMALL)
    model = build_model(SMALL, seed=0)
    out = sample(model, jax.random.key(0), np.resize([1, 2, 225], 24))
    B = len(out)
    samples = pd.DataFrame({"sample_id": [f"s{i}" for i in range(B)], "G": out.G.astype(np.int64),
                            "L": list(out.L.astype(np.float64)), "XYZ": list(out.XYZ.reshape(B, -1).astype(np.float64)),
                            "A": list(out.A.astype(np.int64)), "W": list(out.W.astype(np.int64))})
    relaxed = pd.DataFrame({"sample_id": samples["sample_id"], "status": "ok",
                            "e_hull_final": np.random.default_rng(0).uniform(0, 1, B)})
    samples.to_parquet(tmp_path / "samples.parquet")
    relaxed.to_parquet(tmp_path / "relaxed.parquet")
    outputs = dict(model=str(tmp_path / "ppo_pref"), metrics=str(tmp_path / "metrics.parquet"))
    ppo = dict(algorithm="dpo", pairs="pool", steps=3, batch_size=4, lr=1e-3, pair_min_gap=0.2)
    run_stage("ppo", dict(start_model=str(tmp_path / "base"), train_tokens=[], hull=[], mlip_weights=[], dielectric=[],
                          pairs=[str(tmp_path / "samples.parquet"), str(tmp_path / "relaxed.parquet")]),
              outputs, dict(ppo=ppo, mlip={}, hull={}, ckpt_dir=str(tmp_path / "ckpt"), tokenize={}),
              log=tmp_path / "ppo.log")
    m = pd.read_parquet(outputs["metrics"])
    assert len(m) == 3 and {"step", "loss", "margin", "accuracy", "kl", "reward_mean"} <= set(m.columns)
    load_model(outputs["model"])
    assert "preference pairs from" in (tmp_path / "ppo.log").read_text()


def test_pairs_from_a_table_of_cifs_are_tokenized_and_a_bad_row_dropped(tmp_path):
    from pymatgen.core import Lattice, Structure

    from crystalrl.rl.dpo import pairs_from_table

    cscl = Structure(Lattice.cubic(4.1), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")
    po = Structure(Lattice.cubic(3.3), ["Po"], [[0, 0, 0]]).to(fmt="cif")
    pd.DataFrame({"chosen_cif": [cscl, "not a cif"], "rejected_cif": [po, po]}).to_csv(tmp_path / "pairs.csv")
    chosen, rejected, table = pairs_from_table(tmp_path / "pairs.csv", n_max=21)
    assert table["row"].tolist() == [0]
    assert chosen["G"].tolist() == [221] and sorted(chosen["A"][0][:2].tolist()) == [17, 55]
    assert rejected["A"][0][0] == 84 and chosen["XYZ"].shape == (1, 21, 3)
    pd.DataFrame({"chosen": [cscl]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(KeyError, match="ppo.pairs"):
        pairs_from_table(tmp_path / "bad.parquet", n_max=21)


@pytest.mark.slow
def test_a_dpo_job_waits_for_no_mlip_hull_or_training_tokens(tmp_path):
    """A dpo run reads its pairs and its start model, nothing else: its job must not wait for (or,
    on a cluster, stage) the MLIP weights, the hull or the training tokens that PPO reads."""
    from test_workflow import job_inputs, make_workdir, snakemake

    runs = {"ppo": {"runs": ["ehull", "pref"]}, "ppo_runs": {"pref": {"algorithm": "dpo", "pairs": "pool"}},
            "mlip": {"backend": "orb", "model": "orb-v2"}}
    wd = make_workdir(tmp_path, runs)
    weights, tokens = "resources/mlip/orb-orb-v2.weights", "results/demo/data/tokens_train.parquet"
    ppo = job_inputs(snakemake(wd, "-n", "-p", "--forceall", "results/demo/models/ppo_ehull"), "ppo")
    assert weights in ppo and tokens in ppo  # the on-policy run reads both
    dpo = job_inputs(snakemake(wd, "-n", "-p", "--forceall", "results/demo/models/ppo_pref"), "ppo")
    assert "results/demo/models/base" in dpo and "results/demo/relax/base/sft_pool.parquet" in dpo, dpo
    assert weights not in dpo and tokens not in dpo, dpo
