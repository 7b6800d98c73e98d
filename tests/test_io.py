"""Atomic writers: a failed write leaves the old artifact intact and no temp files behind;
a job's threads go to torch, not to numpy's BLAS."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crystalrl.io import atomic_dir, atomic_path, write_parquet_atomic


def test_atomic_dir_replaces_and_survives_failure(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"

    with atomic_dir(target) as d:  # replacing a non-empty directory
        (d / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]

    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "c.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp dirs left


def test_parquet_write_failure_keeps_old_file(tmp_path):
    import pandas as pd

    path = tmp_path / "t.parquet"
    write_parquet_atomic(pd.DataFrame({"x": [1, 2]}), path)
    with pytest.raises(Exception):
        write_parquet_atomic(pd.DataFrame({"x": [object()]}), path)  # pyarrow cannot encode it
    assert pd.read_parquet(path)["x"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_atomic_outputs_follow_the_umask(tmp_path):
    """Temp files are created 0600; the artifact must get the mode a plain write would (group-readable)."""
    import os
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_set_threads_gives_torch_n_and_numpy_blas_one():
    """In a fresh process with numpy and torch already loaded, as in a Snakemake job: BLAS is
    limited in place, torch keeps the job's threads."""
    code = (
        "import numpy, torch\n"
        "from threadpoolctl import threadpool_info\n"
        "from crystalrl.runtime import set_threads\n"
        "before = {i['user_api']: i['num_threads'] for i in threadpool_info()}['blas']\n"
        "set_threads(2)\n"
        "after = {i['user_api']: i['num_threads'] for i in threadpool_info()}['blas']\n"
        "print(before, after, torch.get_num_threads())\n"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    before, after, torch_threads = map(int, out.stdout.split())
    assert (before, after, torch_threads) == (2, 1, 2)


def _page_faults_of_allocations(keep: bool) -> int:
    """Minor page faults while a fresh process allocates eight 8 MB arrays and frees them, 20 times."""
    code = (
        "import resource, numpy\n"
        "from crystalrl.runtime import keep_freed_memory\n"
        f"assert keep_freed_memory() if {keep} else True\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(20):\n"
        "    blocks = [numpy.ones(1_000_000) for _ in range(8)]; del blocks\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keep_freed_memory_reuses_freed_blocks():
    """As an autograd pass does: many large blocks, all freed. With glibc's defaults the freed
    heap top is handed back to the OS and faulted in again page by page (87,000 faults here,
    4,400 kept); kept, the next round reuses it."""
    default, kept = _page_faults_of_allocations(False), _page_faults_of_allocations(True)
    assert default > 40_000, default
    assert kept < default / 5, (kept, default)


def test_stage_log_lines_appear_once(tmp_path, capfd):
    """Issue 28: a stage's lines were printed twice in a terminal (its format and the root's, which
    a library configures) and written twice when the logger was asked for again."""
    import logging

    from crystalrl.logs import get_logger

    root_handler = logging.StreamHandler()
    logging.getLogger().addHandler(root_handler)
    try:
        log = get_logger("crystalrl.test_once", tmp_path / "rule.log")
        get_logger("crystalrl.test_once", tmp_path / "rule.log")
        log.info("one line")
        logging.getLogger("crystalrl.test_once.module").info("a module's line")
    finally:
        logging.getLogger().removeHandler(root_handler)
    text = (tmp_path / "rule.log").read_text()
    assert text.count("one line") == 1 and text.count("a module's line") == 1, text
    assert capfd.readouterr().err.count("one line") == 1


def test_metrics_table_is_mirrored_into_tensorboard_event_files(tmp_path):
    """Issue 28: live curves. Rows of a metrics table appear as scalars that TensorBoard's own
    reader loads; a second job (a resumed run) rewrites the history without repeating a step."""
    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from crystalrl.curves import CurveMirror

    path = tmp_path / "results" / "demo" / "metrics" / "ppo_ehull.parquet"
    path.parent.mkdir(parents=True)
    rows = [dict(step=s, reward_mean=-5.0 + s, kl=0.1 * s, reward_ehull_mean=-4.0) for s in (1, 2, 3)]
    pd.DataFrame(rows[:2]).to_parquet(path)
    with CurveMirror(path, every_s=3600) as mirror:
        assert mirror.sync() == 2
        pd.DataFrame(rows).to_parquet(path)  # the stage rewrites its table with one row more
    with CurveMirror(path, every_s=3600):  # the next job of a resumed run
        pass
    logdir = tmp_path / "results" / "demo" / "tensorboard" / "ppo_ehull"
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    assert {"reward_mean", "kl", "reward_ehull_mean"} <= set(acc.Tags()["scalars"])
    assert [(e.step, e.value) for e in acc.Scalars("reward_mean")] == [(1, -4.0), (2, -3.0), (3, -2.0)]


def test_library_lines_reach_the_rule_log_of_the_stage_that_runs(tmp_path, monkeypatch):
    """Issue 28: progress and warnings of library modules (crystalrl.relax.batched, crystalrl.hull, ...)
    land in the rule's log, whatever the stage is called, once each; the next stage of the same
    process logs to its own file only."""
    import logging

    import pandas as pd

    from crystalrl.io import write_parquet_atomic
    from crystalrl.stages import merge_relax, run_stage

    def logging_writer(df, path):
        logging.getLogger("crystalrl.hull.readers").info("a library line for %s", Path(path).name)
        write_parquet_atomic(df, path)

    monkeypatch.setattr(merge_relax, "write_parquet_atomic", logging_writer)
    chunk = tmp_path / "c0.parquet"
    pd.DataFrame({"sample_id": ["a", "b"]}).to_parquet(chunk)
    for name in ("first", "second"):
        run_stage("merge_relax", {"chunks": [str(chunk)]}, {"relaxed": str(tmp_path / f"{name}.parquet")}, {},
                  log=tmp_path / f"{name}.log")
    first, second = (tmp_path / "first.log").read_text(), (tmp_path / "second.log").read_text()
    assert first.count("a library line for first.parquet") == 1 and first.count("1 chunks, 2 rows") == 1, first
    assert "second.parquet" not in first and second.count("a library line for second.parquet") == 1, second


def test_progress_lines_say_how_far_a_long_loop_is(caplog):
    """A job on a node has no terminal: a long loop says how far it is in the log, at most once per
    interval, with a last line; a loop shorter than one interval says nothing."""
    import logging

    from crystalrl.logs import Progress

    now = [0.0]
    log = logging.getLogger("crystalrl.test_progress")
    with caplog.at_level(logging.INFO, logger="crystalrl.test_progress"):
        p = Progress("relax", 100, log, every_s=60, clock=lambda: now[0])
        for _ in range(100):
            now[0] += 2.0  # 2 s per structure: 200 s in all
            p.update()
        quick = Progress("quick", 10, log, every_s=60, clock=lambda: now[0])
        for _ in range(10):
            quick.update()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["relax: 30/100 (30%), 0.5/s, about 2 min left", "relax: 60/100 (60%), 0.5/s, about 1 min left",
                     "relax: 90/100 (90%), 0.5/s, about 0 min left", "relax: 100/100 (100%), 0.5/s, done in 3.3 min"]


def wandb_history(run_file: Path) -> list[dict]:
    """The logged rows of an offline W&B run file: LevelDB-log records (32 KiB blocks, 7-byte
    headers: crc32, length, type) holding wandb's `Record` protobufs."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, buf, rows = run_file.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B", run_file
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:  # zero padding to the end of a block
            pos += block - pos % block
            continue
        buf, pos = buf + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):  # a whole record, or its last piece
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def test_metrics_go_to_weights_and_biases_offline_when_configured(tmp_path, monkeypatch):
    """Issue 28: W&B is an option, configured with its own variables and tested offline: the rows of
    the table reach an offline run, one W&B run per table; without WANDB_PROJECT nothing is made."""
    pytest.importorskip("wandb", reason="wandb is optional (pip install wandb); CI installs it with [dev]")
    import pandas as pd

    from crystalrl.curves import CurveMirror

    path = tmp_path / "results" / "demo" / "metrics" / "ppo_ehull.parquet"
    path.parent.mkdir(parents=True)
    pd.DataFrame([dict(step=s, reward_mean=-5.0 + s, kl=0.1 * s) for s in (1, 2, 3)]).to_parquet(path)
    with CurveMirror(path, every_s=3600):
        pass
    assert not (tmp_path / "results" / "demo" / "wandb").exists()
    monkeypatch.setenv("WANDB_PROJECT", "crystalrl-test")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    with CurveMirror(path, every_s=3600):
        pass
    runs = list((tmp_path / "results" / "demo" / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    rows = wandb_history(runs[0])
    assert [(r["_step"], r["reward_mean"]) for r in rows] == [(1, -4), (2, -3), (3, -2)]
