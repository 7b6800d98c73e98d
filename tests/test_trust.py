"""Stale or damaged state is never trusted (issue 23), at the level of the stages the rules run.

- The PPO stage resumes only its own run: after its start model is rewritten in place
  (what retraining the base model with another `pretrain.lr` does), it retrains.
- A failing stage leaves its traceback and one line of advice in the rule's log:
  a truncated Parquet input, a corrupt model directory.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crystalrl.config import section
from crystalrl.io import write_parquet_atomic
from crystalrl.model.config import ModelConfig
from crystalrl.model.store import build_model, load_model, params_of, save_model
from crystalrl.stages import run_stage
from crystalrl.tokenizer import arrays_to_tokens_df

SMALL = ModelConfig.from_dict(dict(h0_size=32, num_layers=2, num_heads=2, key_size=8, model_size=16, embed_size=8,
                                   dropout_rate=0.0, attn_dropout=0.0))


@pytest.fixture(scope="module")
def tokens(shared_reference, tmp_path_factory):
    z = np.load(shared_reference / "crystalformer_logp_alex.npz")
    path = tmp_path_factory.mktemp("tokens") / "tokens_train.parquet"
    write_parquet_atomic(arrays_to_tokens_df({k: z[k][:64] for k in ("G", "L", "XYZ", "A", "W")}), path)
    return path


def _ppo_stage(tmp_path, start_model, tokens, ckpt, out):
    ppo = dict(reward="user_rewards:oxygen_fraction", steps=2, batch_size=16, ckpt_every=1, lr=3e-3, seed=1)
    run_stage("ppo", dict(start_model=str(start_model), train_tokens=str(tokens), hull=[], dielectric=[]),
              dict(model=str(tmp_path / out), metrics=str(tmp_path / f"{out}.parquet")),
              dict(ppo=section("ppo", ppo), mlip=section("mlip"), hull=section("hull"), ckpt_dir=str(ckpt)),
              log=tmp_path / f"{out}.log")
    model, _ = load_model(tmp_path / out)
    return params_of(model), pd.read_parquet(tmp_path / f"{out}.parquet")


def _same(a, b) -> bool:
    import jax
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_ppo_stage_retrains_when_its_start_model_is_rewritten(tmp_path, tokens):
    """The issue's reproduction: a finished PPO run, then its start model changes in place."""
    base, ckpt = tmp_path / "models" / "base", tmp_path / "checkpoints" / "ppo"
    save_model(base, build_model(SMALL, seed=0), SMALL)
    first, m1 = _ppo_stage(tmp_path, base, tokens, ckpt, "ppo1")
    # an unchanged rerun resumes the finished run: the same model, bit for bit
    again, m2 = _ppo_stage(tmp_path, base, tokens, ckpt, "ppo2")
    assert "resumed PPO" in (tmp_path / "ppo2.log").read_text()
    assert _same(first, again)
    pd.testing.assert_frame_equal(m1.filter(regex="^(?!time_)"), m2.filter(regex="^(?!time_)"))

    save_model(base, build_model(SMALL, seed=1), SMALL)  # "pretrain.lr changed": another base, same path
    redone, m3 = _ppo_stage(tmp_path, base, tokens, ckpt, "ppo3")
    log = (tmp_path / "ppo3.log").read_text()
    assert "resumed PPO" not in log and "not resumed" in log and "start_params" in log, log
    fresh, m4 = _ppo_stage(tmp_path, base, tokens, tmp_path / "checkpoints" / "fresh", "ppo4")
    assert _same(redone, fresh) and not _same(redone, first)
    assert not list(ckpt.parent.glob("ppo.superseded-*"))  # deleted after the new run's first checkpoint


def test_truncated_parquet_input_is_named_in_the_rule_log(tmp_path, tokens):
    bad = tmp_path / "tokens_train.parquet"
    bad.write_bytes(tokens.read_bytes()[:-100])  # a job killed mid-copy, a full disk
    save_model(tmp_path / "base", build_model(SMALL, seed=0), SMALL)
    with pytest.raises(Exception, match="not a readable Parquet file"):
        run_stage("sample", dict(model=str(tmp_path / "base"), train_tokens=str(bad)),
                  dict(samples=str(tmp_path / "s.parquet")),
                  dict(sample=dict(n_samples=4, spacegroups="train", batch_size=4, temperature=1.0, top_p=1.0,
                                   seed=0, elements=None), model_name="base"), log=tmp_path / "sample.log")
    log = (tmp_path / "sample.log").read_text()
    assert "Traceback" in log and f"what to do: unreadable artifact {bad}" in log
    assert f"snakemake --forcerun {bad}" in log


def test_corrupt_model_directory_is_named_in_the_rule_log(tmp_path, tokens):
    model = tmp_path / "models" / "base"
    save_model(model, build_model(SMALL, seed=0), SMALL)
    for f in (model / "params").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[:10])  # truncated array data
    with pytest.raises(Exception, match="parameters cannot be read"):
        run_stage("sample", dict(model=str(model), train_tokens=str(tokens)),
                  dict(samples=str(tmp_path / "s.parquet")),
                  dict(sample=dict(n_samples=4, spacegroups="train", batch_size=4, temperature=1.0, top_p=1.0,
                                   seed=0, elements=None), model_name="base"), log=tmp_path / "sample.log")
    log = (tmp_path / "sample.log").read_text()
    assert "Traceback" in log and f"what to do: unreadable artifact {model}" in log
    assert f"snakemake --forcerun {model}" in log


def test_truncated_compressed_input_is_named_after_a_failure(tmp_path):
    """A hull or data file cut short in transfer fails deep inside a reader; the advice names the file."""
    import bz2

    from crystalrl.artifacts import advice_for

    good, bad = tmp_path / "ok.json.bz2", tmp_path / "hull.json.bz2"
    good.write_bytes(bz2.compress(b"{}"))
    bad.write_bytes(bz2.compress(b'{"entries": []}' * 1000)[:60])
    try:
        with bz2.open(bad) as f:
            f.read()
    except (OSError, EOFError) as exc:
        line = advice_for(exc, [good, bad])
    assert line.startswith(f"unreadable artifact {bad}") and "truncated or corrupt bz2" in line
    assert advice_for(ValueError("something else"), [good]).startswith("ValueError: something else")


def test_gpu_stage_with_cpu_only_jax_stops_within_seconds(tmp_path, tokens, monkeypatch):
    """Issue 24: a 'GPU' job on CPU-only JAX once ran for days on the CPU. With runtime.device
    cuda (or under Slurm with a GPU asked for) it stops at once, naming backend and install."""
    import time

    from crystalrl.devices import GPU_INSTALL, NoGPUError
    save_model(tmp_path / "base", build_model(SMALL, seed=0), SMALL)
    args = (dict(model=str(tmp_path / "base"), train_tokens=str(tokens)), dict(samples=str(tmp_path / "s.parquet")),
            dict(sample=dict(n_samples=4, spacegroups="train", batch_size=4, temperature=1.0, top_p=1.0, seed=0,
                             elements=None), model_name="base"))
    for env, resources in (({"CRYSTALRL_DEVICE": "cuda"}, {}),
                           ({"CRYSTALRL_DEVICE": "auto", "SLURM_JOB_ID": "123"}, {"gpu": 1})):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        t0 = time.time()
        with pytest.raises(NoGPUError) as err:
            run_stage("sample", *args, log=tmp_path / "sample.log", resources=resources)
        assert time.time() - t0 < 20 and not (tmp_path / "s.parquet").exists()
        msg = str(err.value)
        assert "stage sample must run on a GPU" in msg and "jax runs on cpu" in msg and GPU_INSTALL in msg
        assert "runtime.device: cpu" in msg
    monkeypatch.setenv("CRYSTALRL_DEVICE", "cpu")  # saying so: the CPU is fine, also under Slurm
    run_stage("sample", *args, log=tmp_path / "sample.log", resources={"gpu": 1})
    assert len(pd.read_parquet(tmp_path / "s.parquet")) == 4
