"""PPO on a toy reward: moves the policy, beta limits the move, resumption is exact."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from crystalrl.model.config import ModelConfig
from crystalrl.rewards import RewardResult
from crystalrl.rl.ppo import PPOConfig, run_ppo
from crystalrl.spacegroups import spacegroup_probs
from crystalrl.model.store import build_model, params_of

TARGET = 8  # oxygen
SMALL = ModelConfig.from_dict(dict(h0_size=32, num_layers=2, num_heads=2, key_size=8, model_size=16, embed_size=8,
                    dropout_rate=0.0, attn_dropout=0.0))


def tokens_of(out):
    """A cheap 'decode' for the toy reward: keep the tokens (no structures needed)."""
    return [dict(A=a, W=w) for a, w in zip(out.A, out.W)]


def oxygen_site_fraction(samples):
    """Toy reward: fraction of occupied Wyckoff sites holding the target element."""
    r = np.array([np.mean(s["A"][s["W"] > 0] == TARGET) if (s["W"] > 0).any() else 0.0 for s in samples])
    return RewardResult(reward=r, valid=np.ones(len(r), bool), extras={"o_frac": r})


def _run(beta, steps=25, start_seed=0, ref_seed=None, lr=3e-3, minibatch=None, **kw):
    policy, ref = build_model(SMALL, seed=start_seed), build_model(SMALL, seed=start_seed if ref_seed is None else ref_seed)
    cfg = PPOConfig.from_dict(dict(beta=beta, steps=steps, batch_size=48, lr=lr, ppo_epochs=3, seed=3,
                                   ckpt_every=2, minibatch=minibatch))
    sg = spacegroup_probs([1, 2, 225])
    return run_ppo(policy, ref, oxygen_site_fraction, sg, cfg, decode=tokens_of, **kw)


@pytest.mark.slow
def test_ppo_moves_toward_reward_and_beta_limits_kl():
    _, free = _run(beta=0.0)
    _, tied = _run(beta=5.0)
    start = free["reward_mean"].iloc[:3].mean()
    assert start < 0.05  # a random model puts ~1/118 of its sites on oxygen
    end = free["reward_mean"].iloc[-3:].mean()
    assert end > start + 0.08 and end > 10 * start, free[["step", "reward_mean", "kl"]]
    # the KL to the base model stays finite, and a larger beta keeps the policy closer
    assert np.isfinite(free["kl"]).all() and np.isfinite(tied["kl"]).all()
    assert tied["kl"].iloc[-3:].mean() < 0.5 * free["kl"].iloc[-3:].mean()
    assert tied["reward_mean"].iloc[-3:].mean() < free["reward_mean"].iloc[-3:].mean()


def test_ppo_resume_after_kill_logs_the_same_metrics(tmp_path):
    steps = 6
    policy_a, full = _run(beta=0.1, steps=steps, ckpt_dir=str(tmp_path / "a"))
    _run(beta=0.1, steps=steps, ckpt_dir=str(tmp_path / "b"), stop_after=3)  # killed after step 3
    policy_b, resumed = _run(beta=0.1, steps=steps, ckpt_dir=str(tmp_path / "b"))  # checkpoint at 2
    cols = [c for c in full.columns if not c.startswith("time_")]
    assert len(resumed) == steps
    # bit for bit: the randomness of step t is fold_in(seed, t), and the state is restored exactly
    np.testing.assert_array_equal(resumed[cols].to_numpy(float), full[cols].to_numpy(float))
    pa, pb = params_of(policy_a), params_of(policy_b)
    import jax
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_spacegroup_probs():
    p = spacegroup_probs("train", np.array([225, 225, 1, 2]))
    assert p[224] == 0.5 and p[0] == 0.25 and p.sum() == pytest.approx(1.0)
    assert spacegroup_probs([225])[224] == 1.0
    with pytest.raises(ValueError):
        spacegroup_probs("uniform")


def test_checkpoints_of_another_setting_are_not_resumed(tmp_path):
    """A rerun with any other setting (here beta; the reward, space groups, ... alike) starts afresh
    instead of resuming the old run's checkpoints under the same run name."""
    _run(beta=0.1, steps=4, ckpt_dir=str(tmp_path / "a"), stop_after=2)  # leaves a checkpoint at step 2
    _, changed = _run(beta=0.3, steps=4, ckpt_dir=str(tmp_path / "a"))
    _, fresh = _run(beta=0.3, steps=4)
    cols = [c for c in fresh.columns if not c.startswith("time_")]
    np.testing.assert_allclose(changed[cols].to_numpy(float), fresh[cols].to_numpy(float), rtol=1e-5, atol=1e-6)


def _table(df):
    return df[[c for c in df.columns if not c.startswith("time_")]].to_numpy(float)


@pytest.mark.parametrize("what", ["start", "reference"])
def test_checkpoints_of_another_start_or_reference_model_are_set_aside(tmp_path, what, caplog):
    """Issue 23: a finished run's checkpoints were resumed after the start model changed
    (a retrained base under the same path), returning the old run as the new one."""
    caplog.set_level(logging.INFO)
    ckpt = tmp_path / "ppo"
    _, first = _run(beta=0.1, steps=4, ckpt_dir=str(ckpt))  # a finished run: checkpoints at 2 and 4 stay
    other = dict(start_seed=1) if what == "start" else dict(ref_seed=1)
    # killed before its first checkpoint: the old checkpoints are set aside, not deleted
    _run(beta=0.1, steps=4, ckpt_dir=str(ckpt), stop_after=1, **other)
    aside = list(tmp_path.glob("ppo.superseded-*"))
    assert len(aside) == 1 and sorted(int(p.name) for p in aside[0].iterdir() if p.name.isdigit()) == [2, 4]
    assert f"{what}_params" in caplog.text and "not resumed" in caplog.text
    # the config changed back: the first run finds its own checkpoints again
    _, again = _run(beta=0.1, steps=4, ckpt_dir=str(ckpt))
    assert "moved back" in caplog.text and not list(tmp_path.glob("ppo.superseded-*"))
    np.testing.assert_array_equal(_table(again), _table(first))
    _, rerun = _run(beta=0.1, steps=4, ckpt_dir=str(ckpt), **other)
    _, fresh = _run(beta=0.1, steps=4, **other)
    np.testing.assert_allclose(_table(rerun), _table(fresh), rtol=1e-5, atol=1e-6)
    assert np.abs(_table(rerun) - _table(first)).max() > 1e-3  # really another run
    assert not list(tmp_path.glob("ppo.superseded-*"))  # gone once the new run had a checkpoint


def test_corrupt_newest_checkpoint_falls_back_to_the_older_one(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    steps = 6
    _, full = _run(beta=0.1, steps=steps)
    _run(beta=0.1, steps=steps, ckpt_dir=str(tmp_path / "b"), stop_after=5)  # checkpoints at 2 and 4
    for f in (tmp_path / "b" / "4" / "state").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(b"garbage")
    _, resumed = _run(beta=0.1, steps=steps, ckpt_dir=str(tmp_path / "b"))
    assert "checkpoint step 4" in caplog.text and "unreadable" in caplog.text
    assert "resumed PPO from" in caplog.text and "at step 2" in caplog.text
    assert list((tmp_path / "b.corrupt").iterdir())[0].name.startswith("4-")  # kept for inspection
    np.testing.assert_allclose(_table(resumed), _table(full), rtol=1e-5, atol=1e-6)


def test_extending_a_finished_run_resumes_it(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    _run(beta=0.1, steps=2, ckpt_dir=str(tmp_path / "a"))
    _, longer = _run(beta=0.1, steps=4, ckpt_dir=str(tmp_path / "a"))
    _, fresh = _run(beta=0.1, steps=4)
    assert "at step 2" in caplog.text
    np.testing.assert_allclose(_table(longer), _table(fresh), rtol=1e-5, atol=1e-6)


def test_diverging_run_stops_before_a_nan_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError, match="PPO diverged at step"):
        _run(beta=0.1, steps=4, lr=1e30, ckpt_dir=str(tmp_path / "a"))
    from crystalrl.train.checkpoint import CheckpointStore
    steps = CheckpointStore(tmp_path / "a").all_steps()
    assert all(s < 2 for s in steps) or not steps


def test_minibatch_of_the_whole_batch_is_the_papers_step_and_smaller_ones_learn():
    _, full = _run(beta=0.1, steps=3)
    _, same = _run(beta=0.1, steps=3, minibatch=48)
    np.testing.assert_array_equal(_table(same), _table(full))
    _, mini = _run(beta=0.0, steps=12, minibatch=16)  # 3 steps per epoch, 9 per PPO step
    assert not np.array_equal(_table(mini)[:3], _table(full))
    assert mini["reward_mean"].iloc[-3:].mean() > 3 * max(mini["reward_mean"].iloc[:2].mean(), 0.01)
    with pytest.raises(ValueError, match="micro_batch 10 must divide batch_size 48"):
        _run(beta=0.1, steps=1, minibatch=10)


_TWO_DEVICES = """
import json, sys
import jax, numpy as np
sys.path.insert(0, sys.argv[1])
from test_ppo import SMALL, oxygen_site_fraction, tokens_of
from crystalrl.model.sampler import sample
from crystalrl.model.store import build_model, params_of
from crystalrl.rl.ppo import _make_update, _logp_fn
from crystalrl.train.loop import data_mesh, make_optimizer
from flax import nnx
assert len(jax.devices()) == 2
model = build_model(SMALL, seed=0)
G = np.array([1, 2, 225, 194] * 4)
one = sample(model, jax.random.key(1), G, chunk_size=4, devices=jax.devices()[:1])
two = sample(model, jax.random.key(1), G, chunk_size=4, devices=jax.devices())
same_samples = all(np.array_equal(getattr(one, k), getattr(two, k)) for k in ("W", "A", "XYZ", "L"))
graphdef, params, rest = nnx.split(model, nnx.Param, ...)
tx, _ = make_optimizer(1e-3)
batch = {k: np.asarray(v) for k, v in one.tokens().items()}
adv = np.asarray(oxygen_site_fraction(tokens_of(one)).reward - 0.01, np.float32)
diff = []
outs = []
losses = []
for devs, n_micro in ((jax.devices()[:1], 1), (jax.devices(), 1), (jax.devices()[:1], 4)):
    mesh = data_mesh(devs)
    p = nnx.to_pure_dict(params)
    lp = _logp_fn(graphdef, rest, mesh)(p, batch)
    state = dict(params=p, opt_state=tx.init(p))
    new, aux = _make_update(graphdef, rest, tx, 0.1, 0.2, mesh, n_micro)(state, batch, lp, lp - 0.01, adv)
    outs.append(np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(new["params"])]))
    losses.append(float(aux["loss"]))
print("RESULT", json.dumps(dict(same_samples=bool(same_samples), update_diff=float(np.abs(outs[0] - outs[1]).max()),
                                micro_diff=float(np.abs(outs[0] - outs[2]).max()), loss_diff=abs(losses[0] - losses[2]),
                                moved=float(np.abs(outs[0] - np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(nnx.to_pure_dict(params))])).max()))))
"""


def test_sampling_and_the_ppo_update_on_two_devices_match_one(repo_root):
    """Issue 24: PPO's sampling splits its chunks over the devices (chunk c on device c mod n,
    the same draws as one device), its update is data parallel (the same step), and so is
    the update accumulated over 4 micro-batches."""
    import json
    import os
    import subprocess
    import sys
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _TWO_DEVICES, str(repo_root / "tests")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert res["same_samples"] and res["moved"] > 1e-5 and res["update_diff"] < 1e-6, res
    assert res["micro_diff"] < 1e-6 and res["loss_diff"] < 1e-5, res  # ppo.micro_batch: the same step
