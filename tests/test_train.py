"""Training loop: data order, optimizer, learning, exact resume, model dirs, data parallel.

Every run uses one small model config, learning rate and batch size, so the jitted
train/eval steps compile once for the whole module (`_make_steps` is cached).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

from crystalrl.model.config import ModelConfig
from crystalrl.model.store import load_model, params_of, save_model
from crystalrl.train.checkpoint import CheckpointStore
from crystalrl.train.loop import TrainConfig, make_optimizer, train
from crystalrl.train.data import DataOrder, clean_arrays

SMALL = dict(num_layers=2, num_heads=4, key_size=16, model_size=32)
LR, BS = 1e-3, 32
KEYS = ("G", "L", "XYZ", "A", "W")


def fit(cfg, tr, va, **kw):
    """`train` with the run's settings given as keywords (the rest of TrainConfig from the schema)."""
    hp = {k: kw.pop(k) for k in list(kw) if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    if "metrics_path" in kw:  # as the train stage does: write the table handed on after each validation
        path = kw.pop("metrics_path")
        kw["on_metrics"] = lambda df: df.to_parquet(path, index=False)
    return train(cfg, dataclasses.replace(TrainConfig.from_dict({}), **hp), tr, va, **kw)


@pytest.fixture(scope="module")
def alex(shared_reference):
    """The 400 tokenized Alexandria structures, seeded split 320 train / 80 val rows
    (the file is ordered: its last rows are all space group 123)."""
    return _split(shared_reference / "crystalformer_logp_alex.npz")


def _split(path):
    z = np.load(path)
    perm = np.random.default_rng(0).permutation(len(z["G"]))
    return tuple({k: z[k][idx] for k in KEYS} for idx in (perm[:320], perm[320:]))


def _max_diff(m1, m2) -> float:
    return max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                                            params_of(m1), params_of(m2))))


# ------------------------------------------------------------------ no model needed
def test_data_order_is_seeded_epoch_shuffle_and_resumable():
    o = DataOrder(n_rows=10, batch_size=3, seed=7)
    assert o.steps_per_epoch == 3  # remainder row dropped, as upstream
    epoch0 = np.concatenate([o.indices(t) for t in range(3)])
    assert len(set(epoch0)) == 9 and set(epoch0) <= set(range(10))
    assert not np.array_equal(o.permutation(0), o.permutation(1))  # reshuffled each epoch
    # a "restarted" order object gives the same batch for any step, e.g. mid epoch 5
    assert np.array_equal(DataOrder(10, 3, 7).indices(16), o.indices(16))
    assert not np.array_equal(DataOrder(10, 3, 8).permutation(0), o.permutation(0))
    with pytest.raises(ValueError, match="larger than the training set"):
        DataOrder(2, 3, 0)


def test_empty_token_table_is_a_clear_error(tmp_path, shared_reference):
    """An empty split (every row rejected) once died in numpy with 'cannot reshape array of size 0'."""
    from crystalrl.io import write_parquet_atomic
    from crystalrl.tokenizer import arrays_to_tokens_df
    from crystalrl.train.data import load_token_arrays
    z = np.load(shared_reference / "crystalformer_logp_alex.npz")
    empty = arrays_to_tokens_df({k: z[k][:1] for k in KEYS}).iloc[:0]
    write_parquet_atomic(empty, tmp_path / "tokens_sft_train.parquet")
    with pytest.raises(ValueError, match="tokens_sft_train.parquet: the token table has no rows"):
        load_token_arrays(tmp_path / "tokens_sft_train.parquet")
    tr, va = (dict(zip(KEYS, (z[k][:0] for k in KEYS))),) * 2
    with pytest.raises(ValueError, match="the train tokens hold no usable rows"):
        fit(ModelConfig.from_dict(SMALL), tr, va, lr=LR, batch_size=BS, steps=1)


def test_clean_arrays_drops_bad_rows_with_reasons(shared_reference):
    z = np.load(shared_reference / "crystalformer_logp_alex.npz")
    arr = {k: z[k][:20].copy() for k in KEYS}
    arr["L"][3, 0] = np.nan
    arr["G"][5] = 0
    arr["A"][7, 0] = 300
    ids = np.array([f"alex-{i}" for i in range(20)])
    clean, rejected = clean_arrays(arr, n_max=21, atom_types=119, wyck_types=28, name="train",
                                   ids=ids, log=logging.getLogger("test"))
    assert len(clean["G"]) == 17
    assert [r["id"] for r in rejected] == ["alex-5", "alex-3", "alex-7"]
    assert "train row 3 (id alex-3)" in rejected[1]["reason"] and "NaN" in rejected[1]["reason"]
    assert clean["L"].dtype == np.float32 and clean["A"].dtype == np.int32
    arr["XYZ"] = arr["XYZ"][:, :20]
    with pytest.raises(ValueError, match="key XYZ has shape"):
        clean_arrays(arr, n_max=21, atom_types=119, wyck_types=28)


def test_optimizer_is_clipped_adam_with_public_schedule():
    lr, decay = 0.1, 0.5
    tx, schedule = make_optimizer(lr, decay, clip_grad=1.0)
    p = {"w": np.array([1.0, -2.0, 3.0], np.float32)}
    state = tx.init(p)
    ref = optax.adam(1.0)  # unit-lr Adam direction; the schedule scales it per step
    rstate = ref.init(p)
    for t in range(3):
        g = {"w": np.array([3.0, 4.0, 0.0], np.float32) * (t + 1)}  # norm 5(t+1) > 1: clipped
        upd, state = tx.update(g, state, p)
        gc = {"w": g["w"] / np.linalg.norm(g["w"])}
        rupd, rstate = ref.update(gc, rstate, p)
        np.testing.assert_allclose(upd["w"], rupd["w"] * lr / (1 + decay * t), rtol=1e-5, atol=1e-7)
    assert schedule(2) == pytest.approx(lr / 2)


# ------------------------------------------------------------------ training runs
@pytest.mark.slow
def test_pretraining_lowers_validation_loss(alex, tmp_path):
    tr, va = alex
    path = tmp_path / "metrics.parquet"
    fit(ModelConfig.from_dict(SMALL), tr, va, lr=LR, batch_size=BS, steps=150, val_every=50,
          metrics_path=path, seed=0)
    m = pd.read_parquet(path)
    assert list(m["step"]) == [0, 50, 100, 150]
    for col in ("val_loss", "val_loss_w", "val_loss_a", "val_loss_xyz", "val_loss_l",
                "train_loss", "train_loss_w", "lr", "time_s"):
        assert col in m.columns, col
    v0, v1 = m["val_loss"].iloc[0], m["val_loss"].iloc[-1]
    assert v1 < 0.75 * v0, f"validation loss {v0:.3f} -> {v1:.3f}"
    for term in ("w", "a", "l"):  # the large terms all learn (xyz is < 1 nat here: few free coords)
        assert m[f"val_loss_{term}"].iloc[-1] < m[f"val_loss_{term}"].iloc[0], term
    assert np.isfinite(m["val_loss_xyz"]).all() and (m["val_loss_xyz"] > 0).all()
    # the total is the sum of its terms
    terms = m[[f"val_loss_{k}" for k in ("w", "a", "xyz", "l")]].sum(axis=1)
    np.testing.assert_allclose(m["val_loss"], terms, rtol=1e-5)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters(alex, tmp_path):
    tr, va = alex
    cfg = ModelConfig.from_dict(SMALL)
    kw = dict(lr=LR, batch_size=BS, steps=14, val_every=4, ckpt_every=4, seed=3, keep_ckpts=2)
    full = fit(cfg, tr, va, ckpt_dir=tmp_path / "a", metrics_path=tmp_path / "a.parquet", **kw)
    # "killed" after step 7: the checkpoint of step 4 is the newest one left
    part = fit(cfg, tr, va, ckpt_dir=tmp_path / "b", metrics_path=tmp_path / "b.parquet",
                 stop_after=7, **kw)
    assert CheckpointStore(tmp_path / "b").latest_step() == 4
    assert _max_diff(part, full) > 1e-4  # the stopped run really is somewhere else
    resumed = fit(cfg, tr, va, ckpt_dir=tmp_path / "b", metrics_path=tmp_path / "b.parquet", **kw)
    assert _max_diff(resumed, full) == 0.0  # bit for bit
    ma, mb = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    cols = [c for c in ma.columns if c != "time_s"]
    pd.testing.assert_frame_equal(ma[cols], mb[cols], rtol=1e-6)
    assert list(ma["step"]) == [0, 4, 8, 12, 14]
    assert sorted(CheckpointStore(tmp_path / "b").manager.all_steps()) == [12, 14]  # keep 2

    # asking for fewer steps than the checkpoints hold gives the shorter run, not the longer one
    shorter = fit(cfg, tr, va, ckpt_dir=tmp_path / "a", metrics_path=tmp_path / "a12.parquet",
                    **dict(kw, steps=12))
    assert _max_diff(shorter, fit(cfg, tr, va, **dict(kw, steps=12))) <= 1e-6
    assert _max_diff(shorter, full) > 1e-4
    assert pd.read_parquet(tmp_path / "a12.parquet")["step"].max() == 12

    # checkpoints of another run (seed) in the same folder are discarded, not resumed
    other = fit(cfg, tr, va, ckpt_dir=tmp_path / "b", **dict(kw, seed=4, steps=4))
    fresh = fit(cfg, tr, va, **dict(kw, seed=4, steps=4))
    assert _max_diff(other, fresh) <= 1e-6


def test_accumulated_micro_batches_take_the_full_batch_step(alex):
    """Issue 24: the paper's global batch on fewer devices. Without dropout, 4 accumulated
    micro-batches of 8 rows give the parameters of one 32-row step (float tolerance)."""
    tr, va = alex
    cfg = ModelConfig.from_dict(dict(SMALL, dropout_rate=0.0, attn_dropout=0.0))
    kw = dict(lr=LR, batch_size=BS, steps=3, val_every=3, seed=2)
    full = fit(cfg, tr, va, **kw)
    acc = fit(cfg, tr, va, micro_batch=8, **kw)
    assert 0 < _max_diff(acc, full) <= 2e-6
    with pytest.raises(ValueError, match="micro_batch 10 must divide batch_size 32"):
        fit(cfg, tr, va, micro_batch=10, **kw)


def test_time_limit_stop_checkpoints_and_the_rerun_ends_where_an_uninterrupted_run_does(alex, tmp_path,
                                                                                     monkeypatch):
    """Issue 24: SIGTERM before a Slurm time limit: the loop saves a checkpoint at the step it is
    at (not only at ckpt_every), raises TimeLimit, and the next job resumes from there."""
    import itertools

    from crystalrl.timelimit import StopRequest, TimeLimit
    tr, va = alex
    cfg = ModelConfig.from_dict(SMALL)
    kw = dict(lr=LR, batch_size=BS, steps=6, val_every=3, ckpt_every=4, seed=5)
    full = fit(cfg, tr, va, **kw)
    calls = itertools.count()
    monkeypatch.setattr(StopRequest, "requested", lambda self: next(calls) >= 2)  # signalled during step 3
    with pytest.raises(TimeLimit) as stop:
        fit(cfg, tr, va, ckpt_dir=tmp_path / "c", **kw)
    assert stop.value.step == 3 and CheckpointStore(tmp_path / "c").all_steps() == [3]
    monkeypatch.undo()
    resumed = fit(cfg, tr, va, ckpt_dir=tmp_path / "c", **kw)
    assert _max_diff(resumed, full) == 0.0


def test_stop_request_catches_sigterm_and_restores_the_handler():
    import os
    import signal

    from crystalrl.timelimit import StopRequest
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested()
    assert signal.getsignal(signal.SIGTERM) is before


def test_stop_request_stops_one_longest_step_before_the_deadline():
    """The margin before a time limit is for the checkpoint and the exit: a step that would
    run into it is not started (the CI failure of a loaded machine: a slow step, then SIGTERM)."""
    import time

    from crystalrl.timelimit import StopRequest
    with StopRequest(env={}) as stop:
        stop.deadline = time.time() + 0.5
        assert not stop.requested()
        time.sleep(0.3)  # a step of 0.3 s: the next would end past the deadline 0.2 s away
        assert stop.requested()


@pytest.mark.parametrize("codes, terminated, stopped", [
    ([75, 0], False, True), ([143], False, False), ([143], True, True), ([-15, 75], True, True), ([1], True, False)])
def test_workers_ended_by_the_jobs_sigterm_stopped_at_the_limit(codes, terminated, stopped):
    """srun's 143 is a time-limit stop only when the job itself got SIGTERM (then the stage
    requeues if a checkpoint beyond its start exists); any other failure stays a failure."""
    from crystalrl.distributed import _raise_for
    from crystalrl.timelimit import TimeLimit
    with pytest.raises(TimeLimit if stopped else RuntimeError):
        _raise_for(codes, "2 processes under srun", terminated=terminated)


def test_local_workers_stopping_one_after_another_are_a_time_limit_stop():
    """The first worker to stop at a time limit must not get the others, still saving, killed."""
    from test_slurm import _STAGGERED_STOP

    from crystalrl import distributed
    from crystalrl.timelimit import TimeLimit
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    with pytest.raises(TimeLimit):
        distributed.launch([sys.executable, "-c", _STAGGERED_STOP], tasks=2, env=env)


@pytest.mark.slow
def test_dropout_draws_new_masks_each_step(alex, tmp_path):
    """Training loss at a fixed state/batch depends on the step's dropout key only."""
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P

    from crystalrl.model.store import build_model
    from crystalrl.train.loop import _make_steps, _rng_tags, data_mesh
    tr, _ = alex
    model = build_model(ModelConfig.from_dict(SMALL), 0)
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    mesh = data_mesh()
    train_step, _ = _make_steps(graphdef, _rng_tags(model), LR, 0.0, 1.0, mesh)
    tx, _ = make_optimizer(LR)
    p = params_of(model)
    state = jax.device_put(dict(params=p, opt_state=tx.init(p), key=jax.random.key_data(jax.random.key(0))),
                           NamedSharding(mesh, P()))
    rest = jax.device_put(rest, NamedSharding(mesh, P()))
    batch = jax.device_put({k: v[:BS].astype(np.float32 if k in ("L", "XYZ") else np.int32)
                            for k, v in tr.items()}, NamedSharding(mesh, P("data")))
    copy = lambda: jax.tree.map(jnp.copy, state)  # noqa: E731 - the step donates (updates in place) its state
    losses = [float(train_step(copy(), rest, batch, np.int32(t))[1]["loss"]) for t in (0, 1, 0)]
    assert losses[0] == losses[2]  # same key, same mask
    assert losses[0] != losses[1]  # dropout is on in training


@pytest.mark.slow
def test_model_dir_roundtrip_and_fine_tuning_start(alex, tmp_path):
    tr, va = alex
    cfg = ModelConfig.from_dict(SMALL)
    model = fit(cfg, tr, va, lr=LR, batch_size=BS, steps=5, val_every=5,
                  metrics_path=tmp_path / "base.parquet")
    save_model(tmp_path / "model", model, cfg, {"note": "base"})
    save_model(tmp_path / "model", model, cfg, {"note": "again"})  # replaces atomically
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]  # no temp left
    loaded, cfg2 = load_model(tmp_path / "model")
    assert cfg2 == cfg and _max_diff(loaded, model) == 0.0
    assert json.loads((tmp_path / "model" / "meta.json").read_text())["note"] == "again"

    # fine-tuning starts from the base parameters: its step-0 validation is the base's final one
    ft_cfg = ModelConfig.from_dict(dict(SMALL, dropout_rate=0.0))
    fit(ft_cfg, tr, va, lr=LR, batch_size=BS, steps=0, val_every=5, init_from=str(tmp_path / "model"),
          metrics_path=tmp_path / "ft.parquet")
    base_val = pd.read_parquet(tmp_path / "base.parquet")["val_loss"].iloc[-1]
    assert pd.read_parquet(tmp_path / "ft.parquet")["val_loss"].iloc[0] == pytest.approx(base_val, rel=1e-6)
    with pytest.raises(ValueError, match="num_layers"):
        fit(ModelConfig.from_dict(dict(SMALL, num_layers=3)), tr, va, lr=LR, batch_size=BS, steps=1,
              init_from=str(tmp_path / "model"))
    from crystalrl.artifacts import ArtifactError
    with pytest.raises(ArtifactError, match="not a crystalrl model directory"):
        load_model(tmp_path)


@pytest.mark.slow
def test_train_stage_writes_model_and_metrics_then_sft(alex, tmp_path):
    from crystalrl.io import write_parquet_atomic
    from crystalrl.stages import run_stage
    from crystalrl.tokenizer import arrays_to_tokens_df
    tr, va = alex
    write_parquet_atomic(arrays_to_tokens_df(tr, [f"t{i}" for i in range(320)]), tmp_path / "tr.parquet")
    write_parquet_atomic(arrays_to_tokens_df(va), tmp_path / "va.parquet")

    def stage(out, init=None, steps=6):
        run_stage("train", dict(train_tokens=tmp_path / "tr.parquet", val_tokens=tmp_path / "va.parquet",
                                init_model=[init] if init else []),
                  dict(model=tmp_path / out, metrics=tmp_path / f"{out}.parquet"),
                  dict(model=SMALL, ckpt_dir=str(tmp_path / f"ckpt_{out}"), section="sft" if init else "pretrain",
                       train=dict(lr=LR, lr_decay=0.0, batch_size=BS, steps=steps,
                                  val_every=3, ckpt_every=3, seed=0, clip_grad=1.0)),
                  log=tmp_path / f"{out}.log")
    stage("base")
    model, cfg = load_model(tmp_path / "base")
    assert cfg == ModelConfig.from_dict(SMALL)
    assert list(pd.read_parquet(tmp_path / "base.parquet")["step"]) == [0, 3, 6]
    assert "ETA" in (tmp_path / "base.log").read_text()
    stage("sft", init=str(tmp_path / "base"), steps=3)
    meta = json.loads((tmp_path / "sft" / "meta.json").read_text())
    assert meta["init_from"] == str(tmp_path / "base") and meta["step"] == 3
    sft = pd.read_parquet(tmp_path / "sft.parquet")
    base = pd.read_parquet(tmp_path / "base.parquet")
    assert sft["val_loss"].iloc[0] == pytest.approx(base["val_loss"].iloc[-1], rel=1e-6)

    # Issue 23: the base model is retrained in place (another lr); SFT's checkpoints of the old
    # base must be set aside, not resumed, and the new SFT equals one that had no checkpoints
    first_sft, _ = load_model(tmp_path / "sft")
    save_model(tmp_path / "base", fit(cfg, tr, va, lr=9e-4, batch_size=BS, steps=6), cfg)
    stage("sft", init=str(tmp_path / "base"), steps=3)
    log = (tmp_path / "sft.log").read_text()
    assert "not resumed" in log and "init_params" in log, log[-2000:]
    redone, _ = load_model(tmp_path / "sft")
    fresh = fit(ModelConfig.from_dict(SMALL), tr, va, lr=LR, batch_size=BS, steps=3, seed=0,
                init_from=str(tmp_path / "base"))
    assert _max_diff(redone, fresh) == 0.0 and _max_diff(redone, first_sft) > 1e-4


@pytest.mark.slow
def test_train_stage_as_two_processes_writes_the_one_process_model(alex, tmp_path):
    """A job with `tasks: 2` (config processes.pretrain) runs the stage as two JAX processes;
    process 0 writes the model, which equals the one-process model."""
    from crystalrl.io import write_parquet_atomic
    from crystalrl.stages import run_stage
    from crystalrl.tokenizer import arrays_to_tokens_df
    tr, va = alex
    write_parquet_atomic(arrays_to_tokens_df(tr), tmp_path / "tr.parquet")
    write_parquet_atomic(arrays_to_tokens_df(va), tmp_path / "va.parquet")
    for name, resources in (("one", {}), ("two", {"tasks": 2, "nodes": 1})):
        run_stage("train", dict(train_tokens=tmp_path / "tr.parquet", val_tokens=tmp_path / "va.parquet", init_model=[]),
                  dict(model=tmp_path / name, metrics=tmp_path / f"{name}.parquet"),
                  dict(model=SMALL, ckpt_dir=str(tmp_path / f"ckpt_{name}"), section="pretrain",
                       train=dict(lr=LR, batch_size=BS, steps=4, val_every=2, ckpt_every=2, seed=0)),
                  log=tmp_path / f"{name}.log", resources=resources)
    log = (tmp_path / "two.log").read_text()
    assert "starting 2 local processes" in log and "4 train" not in log
    assert _max_diff(load_model(tmp_path / "one")[0], load_model(tmp_path / "two")[0]) < 1e-5
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet").drop(columns="time_s"),
                                  pd.read_parquet(tmp_path / "two.parquet").drop(columns="time_s"), rtol=1e-5)


_DP_SCRIPT = textwrap.dedent("""
    import json, sys
    from crystalrl import distributed
    n_proc = distributed.initialize()  # one process (2 host devices), or one of 2 processes (1 device each)
    import jax, numpy as np
    from crystalrl.model.config import ModelConfig
    from crystalrl.model.store import params_of
    sys.path.insert(0, sys.argv[4])
    from test_train import _split, fit
    tr, va = _split(sys.argv[1])
    cfg = ModelConfig.from_dict(json.loads(sys.argv[2]))
    kw = dict(lr=1e-3, batch_size=32, steps=6, val_every=2, seed=1)
    runs = {"proc2": None} if n_proc > 1 else {"dev1": jax.devices()[:1], "dev2": jax.devices()[:2]}
    for name, devices in runs.items():
        m = fit(cfg, tr, va, metrics_path=f"{sys.argv[3]}/{name}.parquet", devices=devices, **kw)
        if distributed.is_primary():
            np.savez(f"{sys.argv[3]}/{name}.npz", *jax.tree.leaves(params_of(m)))
    if n_proc == 1:
        try:
            fit(cfg, tr, va, lr=1e-3, batch_size=33, steps=1)
        except ValueError as e:
            print("RESULT", json.dumps(dict(err=str(e))))
""")


@pytest.mark.slow
def test_one_device_two_host_devices_and_two_processes_train_alike(shared_reference, tmp_path, repo_root):
    """Issue 24: data parallel on 2 devices of one process, and over 2 processes (JAX's CPU
    collectives, as 2 Slurm tasks would run), gives one device's parameters and metrics."""
    from crystalrl import distributed
    args = [sys.executable, "-c", _DP_SCRIPT, str(shared_reference / "crystalformer_logp_alex.npz"),
            json.dumps(SMALL), str(tmp_path), str(repo_root / "tests")]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not a multiple of the 2 devices" in json.loads(proc.stdout.split("RESULT", 1)[1])["err"]
    distributed.launch(args, tasks=2, env={k: v for k, v in env.items() if k != "XLA_FLAGS"})
    params = {n: np.load(tmp_path / f"{n}.npz") for n in ("dev1", "dev2", "proc2")}
    metrics = {n: pd.read_parquet(tmp_path / f"{n}.parquet") for n in params}
    assert list(metrics["dev1"]["step"]) == [0, 2, 4, 6]
    for other in ("dev2", "proc2"):
        for col in ("train_loss", "val_loss", "val_loss_w", "val_loss_xyz"):
            np.testing.assert_allclose(metrics[other][col].to_numpy(), metrics["dev1"][col].to_numpy(), rtol=2e-5,
                                       err_msg=f"{other} {col}")
        diff = max(float(np.abs(params[other][k] - params["dev1"][k]).max()) for k in params["dev1"].files)
        assert diff < 1e-5, (other, diff)


def test_load_model_reads_public_haiku_params(shared_reference):
    """A public-code checkpoint loads through load_published(path, cfg) (as init_from does)."""
    from crystalrl.model.published import load_published
    cfg = ModelConfig.from_dict(json.loads((shared_reference / "crystalformer_small_config.json").read_text()))
    z = np.load(shared_reference / "crystalformer_small_params.npz")
    model, cfg2 = load_published(shared_reference / "crystalformer_small_params.npz", cfg)
    assert cfg2 == cfg
    np.testing.assert_array_equal(np.asarray(model.head.kernel.value), z["transformer/~/linear_15/w"]
                                  if "transformer/~/linear_15/w" in z.files
                                  else z[next(k for k in z.files if k.endswith("linear_15/w"))])
    with pytest.raises(ValueError, match="has no config"):
        load_model(shared_reference / "crystalformer_small_params.npz")
