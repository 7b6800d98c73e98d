"""The experience buffer of CrystalFormer-CSP (`ppo.buffer_gamma`, crystalrl.rl.buffer): it keeps the
best rows, its likelihood term alone raises the toy reward, a resumed run is exact, and the term is
the same step on two devices and in micro-batches. gamma 0 (the paper) is test_guards' stored reference."""
from __future__ import annotations

import logging

import jax
import numpy as np
import pytest

import crystalrl.rl.ppo as ppo_mod
from crystalrl.model.store import build_model
from crystalrl.rl.buffer import Buffer, top_count
from crystalrl.rl.ppo import PPOConfig, run_ppo
from crystalrl.spacegroups import spacegroup_probs

from test_ppo import SMALL, _table, oxygen_site_fraction, tokens_of

N_MAX = 3
BUFFER = dict(buffer_gamma=1.0, buffer_size=64, buffer_batch=32, buffer_fraction=0.25)


def _run(steps, seed=3, lr=3e-3, ckpt_dir=None, stop_after=None, **settings):
    """test_ppo's toy run (batch 48, 3 PPO epochs) with `settings` of the `ppo` section."""
    cfg = PPOConfig.from_dict(dict(dict(beta=0.1, batch_size=48, lr=lr, ppo_epochs=3, seed=seed, ckpt_every=2),
                                   steps=steps, **settings))
    return run_ppo(build_model(SMALL, seed=seed), build_model(SMALL, seed=seed), oxygen_site_fraction,
                   spacegroup_probs([1, 2, 225]), cfg, decode=tokens_of, ckpt_dir=ckpt_dir, stop_after=stop_after)


def _tokens(ids):
    """Token arrays whose rows are recognisable: G holds the row's id."""
    ids = np.asarray(ids)
    B = len(ids)
    return dict(G=ids.astype(np.int32), L=np.tile(ids[:, None], (1, 6)).astype(np.float32),
                XYZ=np.zeros((B, N_MAX, 3), np.float32), A=np.tile(ids[:, None], (1, N_MAX)),
                W=np.ones((B, N_MAX), int))


def test_top_count_rounds_up_without_float_noise():
    assert top_count(30, 0.1) == 3 and top_count(48, 0.1) == 5 and top_count(1, 0.1) == 1
    assert top_count(0, 0.5) == 0 and top_count(7, 1.0) == 7


def test_buffer_keeps_the_best_rows_across_steps_and_caps_at_its_size():
    buf = Buffer.empty(4, N_MAX)
    assert buf.rows == 0 and np.isnan(buf.reward_mean())
    with pytest.raises(ValueError, match="empty"):
        buf.draw(jax.random.key(0), 2)
    # step 1: ids 1..6; id 2 abstains, id 5 is invalid, id 6 has no finite reward (none may enter)
    keep = np.array([True, False, True, True, False, True])
    r = np.array([0.1, 9.0, 0.5, 0.3, 8.0, np.nan])
    buf = buf.insert(_tokens([1, 2, 3, 4, 5, 6]), r, keep, fraction=0.5)  # ceil(0.5 * 3 eligible) = 2
    assert buf.rows == 2 and buf.tokens["G"][:2].tolist() == [3, 4]
    np.testing.assert_array_equal(buf.reward_S[:2], np.float32([0.5, 0.3]))
    # step 2: all enter (fraction 1); the cap keeps the 4 best overall, a tie keeps the older row first
    buf = buf.insert(_tokens([7, 8, 9, 10]), np.array([0.3, 0.7, 0.05, 0.5]), np.ones(4, bool), fraction=1.0)
    assert buf.rows == 4
    assert buf.tokens["G"].tolist() == [8, 3, 10, 4]  # 0.7, 0.5 (older), 0.5, 0.3 (older than id 7's 0.3)
    assert buf.reward_mean() == pytest.approx(np.mean(np.float32([0.7, 0.5, 0.5, 0.3])))
    np.testing.assert_array_equal(buf.tokens["A"][:, 0], [8, 3, 10, 4])  # the rows move whole
    assert buf.tokens["W"].dtype == np.int32 and buf.reward_S.dtype == np.float32
    # step 3: worse than everything held: nothing changes
    same = buf.insert(_tokens([11]), np.array([-1.0]), np.ones(1, bool), fraction=1.0)
    assert same.tokens["G"].tolist() == [8, 3, 10, 4]
    # the draw only sees held rows, with replacement, fixed by the key; the checkpoint form round-trips
    small = Buffer.empty(8, N_MAX).insert(_tokens([1, 2]), np.array([1.0, 2.0]), np.ones(2, bool), 1.0)
    drawn = small.draw(jax.random.key(1), 16)["G"]
    assert set(drawn.tolist()) <= {1, 2} and len(drawn) == 16
    np.testing.assert_array_equal(drawn, small.draw(jax.random.key(1), 16)["G"])
    back = Buffer.from_arrays(jax.tree.map(jax.numpy.asarray, buf.arrays()))
    np.testing.assert_array_equal(back.reward_S, buf.reward_S)
    for k, v in buf.tokens.items():
        np.testing.assert_array_equal(back.tokens[k], v)


@pytest.mark.slow
def test_the_buffer_term_alone_raises_the_toy_reward(monkeypatch):
    """With the policy-gradient advantage zeroed and beta 0 the PPO term has no gradient (gamma 0
    would not move the parameters at all), so only the likelihood of the buffer's draws moves the
    policy: SFT on the best samples so far lifts the share of oxygen sites well beyond where a
    random model starts, for two seeds. A wrong sign or an unused draw fails here."""
    monkeypatch.setattr(ppo_mod, "advantages", lambda r, *args: np.zeros_like(r))
    for seed in (3, 4):
        _, m = _run(steps=12, seed=seed, lr=1e-2, beta=0.0, **BUFFER)
        start, end = m["reward_mean"].iloc[:3].mean(), m["reward_mean"].iloc[-3:].mean()
        print(seed, m[["step", "reward_mean", "buffer_rows", "buffer_reward_mean", "buffer_logp"]].to_string())
        assert start < 0.05 and end > start + 0.1 and end > 5 * start, (seed, start, end)
        full = m["buffer_rows"] == 64  # once full, the buffer's mean reward can only rise
        assert full.iloc[-1] and m["buffer_reward_mean"][full].is_monotonic_increasing


def test_resume_after_kill_with_the_buffer_logs_the_same_metrics(tmp_path, caplog):
    """The buffer is part of the checkpoint: a run killed after step 3 and resumed from step 2 logs
    what an unbroken run logs, bit for bit (here with 2 micro-batches per update, as micro_batch)."""
    steps, kw = 6, dict(micro_batch=24, **BUFFER)
    _, full = _run(steps, ckpt_dir=str(tmp_path / "a"), **kw)
    _run(steps, ckpt_dir=str(tmp_path / "b"), stop_after=3, **kw)
    caplog.set_level(logging.INFO)
    _, resumed = _run(steps, ckpt_dir=str(tmp_path / "b"), **kw)
    assert "resumed PPO from" in caplog.text and "at step 2" in caplog.text  # not a fresh rerun
    assert len(resumed) == steps and {"buffer_rows", "buffer_reward_mean", "buffer_logp"} <= set(full.columns)
    assert np.isfinite(full["buffer_logp"]).all() and full["buffer_rows"].is_monotonic_increasing
    np.testing.assert_array_equal(_table(resumed), _table(full))


def test_without_gamma_there_is_no_buffer_and_a_bad_buffer_batch_names_the_key():
    _, plain = _run(1, buffer_size=8)  # buffer keys without gamma change nothing
    assert not any(c.startswith("buffer_") for c in plain.columns)
    with pytest.raises(ValueError, match="ppo.buffer_batch"):
        _run(1, micro_batch=24, buffer_gamma=0.5, buffer_batch=33)


_TWO_DEVICES = """
import json, sys
import jax, numpy as np
sys.path.insert(0, sys.argv[1])
from test_ppo import SMALL, oxygen_site_fraction, tokens_of
from crystalrl.model.sampler import sample
from crystalrl.model.store import build_model
from crystalrl.rl.ppo import _make_update, _logp_fn
from crystalrl.train.loop import data_mesh, make_optimizer
from flax import nnx
assert len(jax.devices()) == 2
model = build_model(SMALL, seed=0)
one = sample(model, jax.random.key(1), np.array([1, 2, 225, 194] * 4), chunk_size=4, devices=jax.devices()[:1])
draw = sample(model, jax.random.key(2), np.array([1, 225, 12, 2] * 2), chunk_size=4, devices=jax.devices()[:1])
graphdef, params, rest = nnx.split(model, nnx.Param, ...)
tx, _ = make_optimizer(1e-3)
batch = {k: np.asarray(v) for k, v in one.tokens().items()}
buf = {k: np.asarray(v) for k, v in draw.tokens().items()}
adv = np.asarray(oxygen_site_fraction(tokens_of(one)).reward - 0.01, np.float32)
outs, auxs = [], []
for devs, n_micro, gamma in ((jax.devices()[:1], 1, 0.5), (jax.devices(), 1, 0.5), (jax.devices(), 2, 0.5),
                             (jax.devices()[:1], 1, 0.0)):
    mesh = data_mesh(devs)
    p = nnx.to_pure_dict(params)
    lp = _logp_fn(graphdef, rest, mesh)(p, batch)
    state = dict(params=p, opt_state=tx.init(p))
    extra = (buf,) if gamma else ()
    update = _make_update(graphdef, rest, tx, 0.1, 0.2, mesh, n_micro, 0.0, gamma)
    new, aux = update(state, batch, lp, lp - 0.01, adv, *extra)
    outs.append(np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(new["params"])]))
    auxs.append({k: float(v) for k, v in aux.items()})
logp_one = _logp_fn(graphdef, rest, data_mesh(jax.devices()[:1]))
buffer_logp = float(np.mean(np.asarray(logp_one(nnx.to_pure_dict(params), buf))))
print("RESULT", json.dumps(dict(devices_diff=float(np.abs(outs[0] - outs[1]).max()),
                                micro_diff=float(np.abs(outs[0] - outs[2]).max()),
                                term_moves=float(np.abs(outs[0] - outs[3]).max()),
                                loss_term=auxs[0]["loss"] - auxs[3]["loss"], buffer_logp=auxs[0]["buffer_logp"],
                                buffer_logp_micro=auxs[2]["buffer_logp"], buffer_logp_direct=buffer_logp)))
"""


def test_the_buffer_term_on_two_devices_and_micro_batches_is_the_same_step(repo_root):
    """The buffer draw is split over the devices and the micro-batches like the batch: the same
    step as on one device; the loss is the plain one minus gamma * mean log p of the draw."""
    import json
    import os
    import subprocess
    import sys
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _TWO_DEVICES, str(repo_root / "tests")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert res["devices_diff"] < 1e-6 and res["micro_diff"] < 1e-6 and res["term_moves"] > 1e-5, res
    assert res["buffer_logp"] == pytest.approx(res["buffer_logp_direct"], rel=1e-5), res
    assert res["buffer_logp_micro"] == pytest.approx(res["buffer_logp_direct"], rel=1e-5), res
    assert res["loss_term"] == pytest.approx(-0.5 * res["buffer_logp_direct"], rel=1e-4), res
