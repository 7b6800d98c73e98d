"""The SLURM path for real (issue 14).

Unit tests of `crystalrl.slurm` on recorded `sinfo` text and against the plugin's own
sbatch-option code always run. The live tests run the reduced demo (tests/slurm_demo.yaml:
every rule kind, a few minutes) twice, once locally with `--cores 2` (killed with SIGKILL
during PPO and started again, as a user would) and once through `snakemake --profile slurm`
on the project's single-node test cluster (slurm/local/start.sh: partitions cpu and gpu,
one dummy GPU, no accounting), and compare them. CI starts that cluster before pytest;
elsewhere (no sbatch, no controller, or a real cluster) the live tests skip with the reason.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from crystalrl import slurm
from test_workflow import REPO, make_workdir, planned_jobs

DEMO = yaml.safe_load((REPO / "tests" / "slurm_demo.yaml").read_text())
SM = [sys.executable, "-m", "snakemake"]
CONFIG = ["--configfile", "config/demo.yaml", "extra.yaml"]
# The documented knobs for a 2-CPU / 20 GB node; memory figures at a quarter of paper scale.
KNOBS = {"CRYSTALRL_NODE_CPUS": "2", "CRYSTALRL_NODE_MEM_MB": "20000", "CRYSTALRL_MEM_SCALE": "0.25"}
GPU_RULES = {"pretrain", "sample", "relax_chunk", "sft", "ppo", "evaluate"}
# rule -> (CPUs, MB) each job of the reduced demo must ask for under KNOBS
EXPECTED = {"curate_shard": (2, 4000), "curate": (2, 4000), "tokenize": (2, 4000), "pretrain": (2, 8000), "sample": (2, 4000),
            "relax_chunk": (1, 4000), "merge_relax": (1, 1000), "sft_data": (1, 1000), "sft": (2, 8000),
            "ppo": (2, 8000), "evaluate": (2, 4000), "sun_table": (1, 1000), "report": (1, 1000)}
LOCAL_RULES = {"all", "sun_table_default_run", "candidates"}
# The reduced demo's jobs last 10-50 s: the first status poll 2 s after a submission instead
# of the profile's 10 (the plugin adds 10 s per poll that sees no job end), so that the
# serial DAG does not spend a third of its time waiting for polls. The profile is unchanged.
FAST_POLL = ["--slurm-init-seconds-before-status-checks", "2"]

# `sinfo --noheader --Node --format=%P|%N|%c|%m|%G|%l|%T` as recorded on the test cluster,
# and on a cluster with typed GPUs, a drained node and time limits.
SINFO_TEST_CLUSTER = "cpu*|vm|2|24105|gpu:1|infinite|idle\ngpu|vm|2|24105|gpu:1|infinite|idle\n"
SINFO_TYPED = """\
compute*|c001|64|256000|(null)|2-00:00:00|mixed
compute*|c002|128|512000|(null)|2-00:00:00|drained
gpu|g001|32|192000|gpu:a100:4(S:0-1)|1-00:00:00|idle
gpu|g002|48|384000|gpu:h100:8(S:0-1),mps:400|1-00:00:00|allocated
debug|c001|64|256000|(null)|30:00|mixed
"""


# --------------------------------------------------------------------------- unit tests
def test_parse_sinfo_reads_partitions_gpus_limits_and_states():
    nodes = slurm.parse_sinfo(SINFO_TYPED)
    assert [(n.partition, n.name) for n in nodes][:3] == [("compute", "c001"), ("compute", "c002"), ("gpu", "g001")]
    assert nodes[0].default and not nodes[2].default
    assert nodes[2].gpus == {"a100": 4} and nodes[3].gpus == {"h100": 8} and nodes[0].gpus == {}
    assert nodes[0].time_limit == 2880 and nodes[2].time_limit == 1440 and nodes[4].time_limit == 30
    assert not nodes[1].usable and nodes[3].usable      # drained: no new jobs; allocated: later
    test = slurm.parse_sinfo(SINFO_TEST_CLUSTER)
    assert test[1] == slurm.Node("vm", "gpu", False, 2, 24105, {None: 1}, None, "idle")


def test_misfits_names_rule_request_and_largest_node():
    nodes = slurm.parse_sinfo(SINFO_TYPED)
    ok = [slurm.Request("curate", None, 64, 200000, runtime=600),
          slurm.Request("ppo", "gpu", 16, 100000, gpus=1, gpu_type="a100", runtime=1440),
          slurm.Request("sample", "gpu", 8, 16000, gpus=2),                    # untyped: any GPU
          slurm.Request("evaluate", "compute,gpu", 32, 100000)]                # either partition
    assert slurm.misfits(ok, nodes) == []
    bad = slurm.misfits([slurm.Request("curate", None, 128, 16000),           # only the drained node has 128
                         slurm.Request("ppo", "gpu", 16, 32000, gpus=1, gpu_type="v100"),
                         slurm.Request("pretrain", "gpu", 16, 32000, gpus=1, runtime=2880),
                         slurm.Request("report", "bigmem", 1, 4000)], nodes)
    assert len(bad) == 4, bad
    curate, ppo, pretrain, report = sorted(bad, key=lambda m: ["curate", "ppo", "pretrain", "report"].index(
        m.split(":")[0].split()[1]))
    assert curate.startswith("rule curate: asks for 128 CPUs") and "largest node of partition compute is c001 (64 CPUs" in curate
    assert "1 GPU of type v100" in ppo and "gpu:h100:8" in ppo
    assert "2880 min" in pretrain and "time limit 1440 min" in pretrain
    assert "partition 'bigmem' does not exist (partitions: compute, debug, gpu)" in report
    # the test cluster: 2 CPUs, one untyped GPU
    test = slurm.parse_sinfo(SINFO_TEST_CLUSTER)
    assert slurm.misfits([slurm.Request("ppo", "gpu", 2, 8000, gpus=1)], test) == []
    assert slurm.misfits([slurm.Request("ppo", "gpu", 2, 8000, gpus=1, gpu_type="a100")], test) != []


def test_knobs_scale_and_cap_and_bad_values_name_the_variable():
    c = slurm.ClusterSettings.from_env({"CRYSTALRL_NODE_CPUS": "2", "CRYSTALRL_NODE_MEM_MB": "20000",
                                        "CRYSTALRL_MEM_SCALE": "0.25", "CRYSTALRL_MAX_RUNTIME": "1440",
                                        "CRYSTALRL_GPU_PARTITION": "a100q", "CRYSTALRL_ACCOUNT": "proj1"})
    assert slurm.job_threads(8, c) == 2 and slurm.job_threads(1, c) == 1
    assert slurm.job_resources(32000, 2880, True, c) == {"mem_mb": 8000, "runtime": 1440, "slurm_partition": "a100q",
                                                         "slurm_account": "proj1", "gpu": 1}
    big = slurm.ClusterSettings.from_env({"CRYSTALRL_NODE_MEM_MB": "20000", "CRYSTALRL_GPU_TYPE": "h100"})
    assert slurm.job_resources(32000, 60, True, big) == {"mem_mb": 20000, "runtime": 60, "slurm_partition": "gpu",
                                                         "gres": "gpu:h100:1"}
    assert slurm.job_resources(4000, 60, False, big) == {"mem_mb": 4000, "runtime": 60, "slurm_partition": "cpu"}
    for env, var in (({"CRYSTALRL_NODE_CPUS": "two"}, "CRYSTALRL_NODE_CPUS"),
                     ({"CRYSTALRL_MEM_SCALE": "-1"}, "CRYSTALRL_MEM_SCALE"),
                     ({"CRYSTALRL_GPU_TYPE": "a100 --x"}, "CRYSTALRL_GPU_TYPE")):
        with pytest.raises(ValueError, match=var):
            slurm.ClusterSettings.from_env(env)


class _Resources(dict):
    __getattr__ = dict.__getitem__


def test_plugin_emits_what_the_preflight_checks():
    """What snakemake-executor-plugin-slurm 2.8 turns our resources into, and that
    `request_from_resources` reads the same request out of them."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm_jobstep import get_cpu_setting

    for gpu_type, option in (("", "--gpus=1"), ("a100", "--gres=gpu:a100:1")):
        cluster = slurm.ClusterSettings(gpu_type=gpu_type)
        res = _Resources(slurm.job_resources(16000, 60, True, cluster))
        job = SimpleNamespace(resources=res, threads=4)
        assert set_gres_string(job).strip() == option          # untyped: any GPU; typed only when asked
        assert get_cpu_setting(job, True) == "--cpus-per-task=4"
        req = slurm.request_from_resources("ppo", 4, res)
        assert (req.cpus, req.gpus, req.gpu_type, req.partition) == (4, 1, gpu_type or None, "gpu")
    job = SimpleNamespace(resources=_Resources(cpus_per_task=3), threads=8)
    assert get_cpu_setting(job, False) == "--cpus-per-task=3"
    assert slurm.request_from_resources("x", 8, job.resources).cpus == 3


def test_status_polling_problem_with_and_without_accounting():
    none = {"AccountingStorageType": "accounting_storage/none", "MinJobAge": "3600 sec"}
    dbd = {"AccountingStorageType": "accounting_storage/slurmdbd", "MinJobAge": "300 sec"}
    assert "keeps no accounting" in slurm.status_polling_problem("sacct", none, 10)
    assert "keeps no accounting" in slurm.status_polling_problem(None, none, 10)   # the plugin's default
    assert slurm.status_polling_problem("squeue", none, 10) is None
    assert slurm.status_polling_problem("squeue", dbd, 10) is None
    assert slurm.status_polling_problem("sacct", dbd, 10) is None
    # a short MinJobAge: the plugin swaps squeue for sacct (fine with accounting, fatal without)
    assert slurm.effective_status_command("squeue", {**dbd, "MinJobAge": "20 sec"}, 10) == "sacct"
    assert "although squeue was chosen" in slurm.status_polling_problem("squeue", {**none, "MinJobAge": "20 sec"}, 10)
    assert "MinJobAge" in slurm.status_polling_problem("squeue", {**none, "MinJobAge": "100 sec"}, 10)


def _dry_run_resources(wd: Path, *args: str, env: dict | None = None) -> dict[str, str]:
    """rule -> its `resources:` line in a dry run."""
    proc = subprocess.run([*SM, "-n", *args, *CONFIG], cwd=wd, capture_output=True, text=True, timeout=300,
                          env=env or os.environ)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return dict(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out, re.M))


def test_gpu_rules_keep_partition_and_gpu_under_a_user_profile(tmp_path):
    """A second profile (which replaces whole top-level keys) and --set-resources change one
    figure; the GPU rules keep their partition and GPU; no Slurm is needed for a dry run."""
    wd = make_workdir(tmp_path, DEMO)
    (wd / "mine").mkdir()
    (wd / "mine" / "config.yaml").write_text(yaml.safe_dump({
        "default-resources": {"mem_mb": 999}, "set-resources": {"ppo": {"mem_mb": 1234}}}))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "which").symlink_to(shutil.which("which"))
    # a laptop: Python and `which`, but no sinfo, sbatch or squeue on PATH
    no_slurm = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), str(tmp_path / "bin")])}
    res = _dry_run_resources(wd, "--profile", "slurm", "--profile", "mine", env=no_slurm)
    assert "mem_mb=1234" in res["ppo"] and "slurm_partition=gpu" in res["ppo"] and "gpu=1" in res["ppo"]
    assert "slurm_partition=cpu" in res["curate"] and "gpu" not in res["curate"]
    typed = _dry_run_resources(wd, "--profile", "slurm", env={**no_slurm, "CRYSTALRL_GPU_TYPE": "a100",
                                                              "CRYSTALRL_GPU_PARTITION": "a100q"})
    assert "gres=gpu:a100:1" in typed["sample"] and "slurm_partition=a100q" in typed["sample"]
    assert "gpu=1" not in typed["sample"]


def test_gpus_and_processes_per_stage_reach_sbatch(tmp_path):
    """Issue 24: `gpus.pretrain: 8` asks --gpus=8 for that rule only; `processes.pretrain`
    with 2 nodes asks for 2 tasks on 2 nodes with 8 GPUs on each, and the stage starts them."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    def sbatch(res, threads=4):
        job = SimpleNamespace(resources=_Resources(res), threads=threads)
        params = dict(run_uuid="r", slurm_logfile="l", comment_str="c", account="", partition="-p gpu", workdir="")
        return get_submit_command(job, params) + set_gres_string(job)

    wd = make_workdir(tmp_path, {**DEMO, "gpus": {"pretrain": 8}})
    res = _dry_run_resources(wd, "--profile", "slurm", "--forcerun", "pretrain")
    parsed = {rule: dict(kv.split("=", 1) for kv in line.split(", ")) for rule, line in res.items()}
    assert parsed["pretrain"]["gpu"] == "8" and all(parsed[r].get("gpu") == "1" for r in GPU_RULES - {"pretrain"} if r in parsed)
    call = sbatch({k: int(v) if v.isdigit() else v for k, v in parsed["pretrain"].items()})
    assert " --gpus=8" in call and "--ntasks=1 " not in call and "--signal=TERM@600" in call, call
    two_nodes = slurm.job_resources(32000, 600, True, slurm.ClusterSettings(), gpus=8, nodes=2, stop_before_limit=True)
    call = sbatch(two_nodes)
    for opt in ("--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--gres=gpu:8", "--cpus-per-task=4"):
        assert opt in call, (opt, call)
    assert "--ntasks-per-gpu" not in call and "--gpus=" not in call
    req = slurm.request_from_resources("pretrain", 4, _Resources(two_nodes))
    nodes = slurm.parse_sinfo(SINFO_TYPED)
    assert (req.nodes, req.tasks_per_node, req.gpus) == (2, 1, 8)
    assert "only 1 node(s) of partition gpu can hold it" in slurm.misfits([req], nodes)[0]   # one h100 node has 8


# --------------------------------------------------------------------------- the live cluster
@pytest.fixture(scope="module")
def test_cluster() -> dict[str, str]:
    for cmd in ("sbatch", "sinfo", "squeue", "scontrol"):
        if shutil.which(cmd) is None:
            pytest.skip(f"`{cmd}` not found: Slurm is not installed (apt-get install slurm-wlm munge; "
                        "then slurm/local/start.sh)")
    proc = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"no Slurm controller answers ({proc.stderr.strip()[:200]}); start one with slurm/local/start.sh")
    conf = slurm.parse_scontrol_config(proc.stdout)
    if conf.get("ClusterName") != "crystalrl-test":
        pytest.skip(f"cluster {conf.get('ClusterName')!r} is not the project's test cluster (slurm/local/start.sh); "
                    "not submitting test jobs to it")
    return conf


def _run(wd: Path, *args: str, env: dict | None = None, timeout: int = 1500, umask: int = 0o022):
    t0 = time.time()
    proc = subprocess.run([*SM, *args, *CONFIG], cwd=wd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, preexec_fn=lambda: os.umask(umask))
    return proc.returncode, proc.stdout + proc.stderr, time.time() - t0


def _job_seconds(wd: Path) -> float:
    """Sum of the jobs' own run times (Snakemake benchmark files)."""
    return sum(pd.read_csv(f, sep="\t")["s"].iloc[-1] for f in (wd / "benchmarks").rglob("*.tsv"))


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The reduced demo with `--cores 2`, killed (SIGKILL, whole process group) once PPO has
    written its first checkpoint, then started again as a user would: `--unlock` (Snakemake's
    own stale lock) and the same command, with no --rerun-incomplete."""
    wd = make_workdir(tmp_path_factory.mktemp("local"), DEMO)
    cmd = [*SM, "--cores", "2", *CONFIG]
    t0 = time.time()
    with open(wd / "killed_run.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=wd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        first_ckpt = wd / "results" / "demo" / "checkpoints" / "ppo_ehull" / "1"
        while proc.poll() is None and not first_ckpt.exists() and time.time() - t0 < 1500:
            time.sleep(0.2)
        alive = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_log = (wd / "killed_run.log").read_text()
    assert alive, "the local run ended before PPO wrote its first checkpoint: " + killed_log[-3000:]
    subprocess.run([*SM, "--unlock", *CONFIG], cwd=wd, capture_output=True, timeout=300, check=True)
    rc, out, _ = _run(wd, "--cores", "2")
    wall = time.time() - t0
    assert rc == 0, out[-5000:]
    print(f"local run (killed once, resumed): wall {wall:.0f} s, jobs {_job_seconds(wd):.0f} s")
    return SimpleNamespace(wd=wd, out=out, wall=wall, killed_log=killed_log)


@pytest.fixture(scope="module")
def slurm_started(test_cluster, tmp_path_factory):
    """The reduced demo through `--profile slurm` with the knobs for a 2-CPU / 20 GB node,
    under umask 027 (group may read, others not), started in the background: the local run
    overlaps its idle time (polls, job start-up) and the module stays within CI's budget."""
    wd = make_workdir(tmp_path_factory.mktemp("slurm"), DEMO)
    planned = planned_jobs(_run(wd, "-n", "--profile", "slurm", env=KNOBS)[1])
    with open(wd / "slurm_run.log", "w") as log:
        t0 = time.time()
        proc = subprocess.Popen([*SM, "--profile", "slurm", *FAST_POLL, "--verbose", *CONFIG], cwd=wd, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, **KNOBS}, start_new_session=True,
                                preexec_fn=lambda: os.umask(0o027))
        yield SimpleNamespace(wd=wd, proc=proc, t0=t0, planned=planned)
    if proc.poll() is None:     # a failure elsewhere: stop it (Snakemake cancels its Slurm jobs on SIGINT)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def slurm_run(slurm_started, local_run):
    """The finished Slurm run (the local run went on meanwhile), with Slurm's record of its jobs."""
    rc = slurm_started.proc.wait(timeout=1800)
    wall = time.time() - slurm_started.t0
    wd = slurm_started.wd
    out = (wd / "slurm_run.log").read_text()
    assert rc == 0, out[-6000:]
    run_id = re.search(r"SLURM run ID: (\S+)", out).group(1)
    fields = "JobID,Partition,NumCPUs,tres-per-job,MinMemory,Comment,State,SubmitTime,StartTime,EndTime"
    sq = subprocess.run(["squeue", "--states=all", "--noheader", "--name", run_id,
                         "-O", ",".join(f"{f}:|" for f in fields.split(","))],
                        capture_output=True, text=True, timeout=60, check=True).stdout
    jobs = pd.DataFrame([[c.strip() for c in line.split("|")[:10]] for line in sq.splitlines() if line.strip()],
                        columns=fields.split(","))
    run = SimpleNamespace(wd=wd, out=out, wall=wall, run_id=run_id, planned=slurm_started.planned, squeue=jobs)
    print(_overheads(run) + " (the local run shared the 2 cores meanwhile)")
    return run


def _overheads(run) -> str:
    """Where the wall time of the Slurm run goes, per job: waiting in Slurm's queue (for the
    node's 2 CPUs, as a local run waits for its cores), Snakemake starting inside the job
    before the rule's script, and the time until Snakemake's next status poll saw the end."""
    ts = lambda s: pd.to_datetime(s, format="%Y-%m-%dT%H:%M:%S")  # noqa: E731
    sq = run.squeue.set_index("JobID")
    slurm_id = dict(re.findall(r"^Job (\d+) has been submitted with SLURM jobid (\d+)", run.out, re.M))
    seen = {slurm_id[j]: pd.Timestamp(t) for t, j in re.findall(
        r"^\[\w{3} (\w{3} +\d+ [\d:]+ \d{4})\]\nFinished jobid: (\d+) ", run.out, re.M) if j in slurm_id}
    queued = (ts(sq.StartTime) - ts(sq.SubmitTime)).dt.total_seconds()
    in_slurm = (ts(sq.EndTime) - ts(sq.StartTime)).dt.total_seconds()
    lag = pd.Series({j: (t - ts(sq.EndTime[j])).total_seconds() for j, t in seen.items()})
    scripts = _job_seconds(run.wd)
    n = len(sq)
    return (f"slurm run: wall {run.wall:.0f} s, {n} jobs; per job on average: {scripts / n:.1f} s in the rule script, "
            f"{(in_slurm.sum() - scripts) / n:.1f} s of snakemake start-up inside the job, {queued.mean():.1f} s "
            f"queued, {lag.mean():.1f} s until the next status poll saw it end (max {lag.max():.0f} s)")


def test_every_job_went_through_sbatch_with_partition_gpu_and_cpus(slurm_run):
    # (deduplicated: a library that configures the root logger makes Snakemake print each line twice)
    calls = list(dict.fromkeys(re.findall(r"^sbatch call: (sbatch .*)$", slurm_run.out, re.M)))
    submitted = {rule: n for rule, n in slurm_run.planned.items() if rule not in LOCAL_RULES}
    assert sum(submitted.values()) == len(calls) >= 17, (submitted, len(calls))
    seen: dict[str, int] = {}
    for call in calls:
        rule = re.search(r"--comment rule_(\w+?)(?:_wildcards_\S*)? ", call).group(1)
        seen[rule] = seen.get(rule, 0) + 1
        cpus, mem = EXPECTED[rule]
        assert f" -p {'gpu' if rule in GPU_RULES else 'cpu'} " in call, call
        assert f"--cpus-per-task={cpus} " in call and f" --mem {mem} " in call, call
        assert ("--gpus=1" in call) == (rule in GPU_RULES) and "--gres" not in call, call
    assert seen == submitted
    # Slurm's own record of the same jobs (squeue keeps them for MinJobAge = 1 h here)
    sq = slurm_run.squeue
    assert len(sq) == len(calls) and set(sq.State) == {"COMPLETED"}
    for _, job in sq.iterrows():
        rule = re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", job.Comment).group(1)
        assert job.Partition == ("gpu" if rule in GPU_RULES else "cpu")
        assert int(job.NumCPUs) == EXPECTED[rule][0] <= 2 and job.MinMemory == f"{EXPECTED[rule][1]}M"
        assert (job["tres-per-job"] == "gres:gpu:1") == (rule in GPU_RULES)


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for f in sorted(root.rglob("*")):
        if f.suffix in (".parquet", ".csv") and "checkpoints" not in f.parts:
            df = pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f)
            out[str(f.relative_to(root))] = df.drop(columns=[c for c in df.columns if "time" in c or "second" in c])
    return out


def test_slurm_outputs_equal_the_local_run(local_run, slurm_run):
    local, remote = _tables(local_run.wd / "results"), _tables(slurm_run.wd / "results")
    assert set(local) == set(remote) and len(local) >= 20
    for name, df in local.items():
        pd.testing.assert_frame_equal(df, remote[name], obj=name)
    for fig in ("pretrain_loss", "ppo_curves", "ehull_hist", "sun_per_spacegroup"):
        assert (slurm_run.wd / "results" / "demo" / "figures" / f"{fig}.png").stat().st_size > 10_000


def test_killed_local_run_resumes_ppo_from_its_checkpoint(local_run):
    """Issue 14: a plain second run (the default workflow profile's rerun-incomplete) redoes
    the killed PPO job, and PPO resumes from its step-1 checkpoint; its metrics then equal
    the uninterrupted Slurm run's (test above)."""
    assert "(Rule: ppo)" not in local_run.killed_log      # the first run never finished PPO
    assert "Using workflow specific profile profiles/default" in local_run.out
    log = (local_run.wd / "logs" / "demo" / "ppo_ehull.log").read_text()
    assert re.search(r"resumed PPO from \S+ at step 1\b", log), log[-2000:]
    metrics = pd.read_parquet(local_run.wd / "results" / "demo" / "metrics" / "ppo_ehull.parquet")
    assert list(metrics["step"]) == list(range(1, DEMO["ppo"]["steps"] + 1))   # each step once


def test_outputs_follow_the_umask(slurm_run):
    """Under umask 027 every result is readable by the group and by nobody else."""
    def expected(p: Path) -> int:
        return 0o050 if p.is_dir() or p.stat().st_mode & 0o100 else 0o040

    wrong = [f"{oct(p.stat().st_mode & 0o777)} {p.relative_to(slurm_run.wd)}"
             for p in (slurm_run.wd / "results").rglob("*") if p.stat().st_mode & 0o077 != expected(p)]
    assert not wrong, wrong[:20]


def test_sacct_sees_no_job_here_so_the_profile_polls_with_squeue(slurm_run):
    """Without accounting the plugin's sacct query gets no job state (Snakemake would wait
    forever); its squeue query sees every job. The profile's run polled with squeue, and a
    run asking for sacct stops in the pre-flight check instead of hanging."""
    from snakemake_executor_plugin_slurm.job_status_query import (
        query_job_status, query_job_status_sacct, query_job_status_squeue)

    log = logging.getLogger("plugin")
    by_sacct, _ = asyncio.run(query_job_status(query_job_status_sacct(slurm_run.run_id), log))
    by_squeue, _ = asyncio.run(query_job_status(query_job_status_squeue(slurm_run.run_id), log))
    assert by_sacct is None   # the plugin's "query failed": no job is ever reported finished
    assert len(by_squeue) == len(slurm_run.squeue) and set(by_squeue.values()) == {"COMPLETED"}
    assert "Status query timing (cycle): command=squeue" in slurm_run.out and "command=sacct" not in slurm_run.out

    rc, out, seconds = _run(slurm_run.wd, "--profile", "slurm", "--slurm-status-command", "sacct",
                            "--forcerun", "sun_table", env=KNOBS, timeout=300)
    assert rc != 0 and "keeps no accounting" in out and "has been submitted" not in out, out[-3000:]
    assert seconds < 120


def test_request_that_fits_no_node_stops_before_submission(slurm_run):
    def n_jobs():  # the newest job id: finished jobs leave squeue's list while the test runs, so no count
        ids = subprocess.run(["squeue", "--states=all", "--noheader", "-o", "%i"], capture_output=True, text=True).stdout
        return max((int(x) for x in ids.split() if x.isdigit()), default=0)

    before = n_jobs()
    rc, out, _ = _run(slurm_run.wd, "--profile", "slurm", "--forcerun", "ppo", "--set-threads", "ppo=64",
                      "--set-resources", "evaluate:mem_mb=500000", env=KNOBS, timeout=300)
    assert rc != 0, out[-3000:]
    assert re.search(r"rule ppo: asks for 64 CPUs, 8000 MB, 1 GPU, \d+ min on partition gpu; "
                     r"the largest node of partition gpu is \S+ \(2 CPUs", out), out[-3000:]
    assert re.search(r"rule evaluate: asks for 2 CPUs, 500000 MB", out), out[-3000:]
    assert "has been submitted" not in out and n_jobs() == before
    assert (slurm_run.wd / "results" / "demo" / "models" / "ppo_ehull").is_dir()   # nothing was touched


def test_profile_builds_the_default_run_table(slurm_run):
    rc, out, _ = _run(slurm_run.wd, "--profile", "slurm", *FAST_POLL, "results/sun_by_spacegroup.csv", env=KNOBS,
                      timeout=300)
    assert rc == 0, out[-3000:]
    assert "localrule sun_table_default_run" in out      # a local rule: no Slurm job for a copy
    copied, table = (slurm_run.wd / "results" / "sun_by_spacegroup.csv"), slurm_run.wd / "results/demo/sun_by_spacegroup.csv"
    assert copied.read_bytes() == table.read_bytes()


def test_failing_job_is_reported_and_earlier_results_are_kept(slurm_run):
    """Runs last: a second PPO run whose reward raises. Its Slurm job fails, Snakemake says
    so, keeps the job's Slurm log, and leaves every earlier result as it was."""
    wd = slurm_run.wd
    (wd / "failing_reward.py").write_text(
        "def boom(structures):\n    raise RuntimeError('injected failure (tests/test_slurm.py)')\n")
    res = wd / "results" / "demo"
    upstream = [p for d in ("data", "models", "samples", "relax", "eval", "metrics", "checkpoints")
                for p in (res / d).rglob("*") if p.is_file()]
    stamps = {p: p.stat().st_mtime_ns for p in upstream}
    extra = wd / "extra.yaml"
    extra.write_text(yaml.safe_dump({**DEMO, "ppo": {**DEMO["ppo"], "runs": ["ehull", "boom"]},
                                     "ppo_runs": {"boom": {"reward": "failing_reward:boom"}}}))
    path = os.pathsep.join(p for p in (str(wd), os.environ.get("PYTHONPATH", "")) if p)
    rc, out, _ = _run(wd, "--profile", "slurm", *FAST_POLL, env={**KNOBS, "PYTHONPATH": path}, timeout=900)
    assert rc != 0, out[-3000:]
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", out), out[-3000:]
    assert "Error in rule ppo" in out and len(set(re.findall(r"has been submitted with SLURM jobid (\d+)", out))) == 1
    # the error names the rule's log and the job's Slurm log, which is kept and holds the traceback
    slurm_log = re.search(r"log: logs/demo/ppo_boom\.log, (\S+/slurm_logs/rule_ppo/boom/\d+\.log)", out).group(1)
    assert "injected failure" in Path(slurm_log).read_text()
    assert len(upstream) > 20 and {p: p.stat().st_mtime_ns for p in upstream if p.exists()} == stamps


# --------------------------------------------------------------------------- time limits and tasks
_REFERENCE = """
import sys, numpy as np, yaml
from crystalrl import distributed
distributed.initialize()
import jax
from crystalrl.config import validate_config
from crystalrl.model.config import ModelConfig
from crystalrl.model.store import params_of
from crystalrl.train.data import load_token_arrays
from crystalrl.train.loop import TrainConfig, train
wd = sys.argv[1]
cfg = validate_config(yaml.safe_load(open(wd + "/config/demo.yaml")))
extra = yaml.safe_load(open(wd + "/extra.yaml"))
cfg["pretrain"].update(extra["pretrain"])
tr, _ = load_token_arrays(wd + "/results/demo/data/tokens_train.parquet")
va, _ = load_token_arrays(wd + "/results/demo/data/tokens_val.parquet")
m = train(ModelConfig.from_dict(cfg["model"]), TrainConfig.from_dict(cfg["pretrain"]), tr, va)
if distributed.is_primary():
    np.savez(sys.argv[2], *jax.tree.leaves(params_of(m)))
"""
TIME_LIMITED = {**DEMO, "threads": {"train": 1}, "processes": {"pretrain": {"tasks_per_node": 2}},
                "pretrain": {"steps": 300, "batch_size": 32, "val_every": 100, "ckpt_every": 10000}}


# workers of one job that stop at a time limit one after another (the second still saving)
_STAGGERED_STOP = ("import os, sys, time; from crystalrl.distributed import mark_stopped; "
                   "time.sleep(3 * int(os.environ.get('SLURM_PROCID', os.environ.get('CRYSTALRL_PROCESS_ID', 0)))); "
                   "sys.exit(mark_stopped())")


def test_workers_stopping_one_after_another_under_srun_are_a_time_limit_stop(test_cluster, tmp_path):
    """srun --kill-on-bad-exit kills the other tasks when the first exits non-zero: a worker
    that stopped at its limit first must not kill one still saving (CI: srun's 143, no requeue)."""
    script = tmp_path / "job.py"
    script.write_text(f"""import sys
from crystalrl.distributed import launch
from crystalrl.timelimit import TimeLimit
try:
    launch([sys.executable, "-c", {_STAGGERED_STOP!r}], tasks=2, stop_file={str(tmp_path / 'stopped')!r})
except TimeLimit as exc:
    print("TIME LIMIT:", exc)
""")
    out = tmp_path / "job.out"
    subprocess.run(["sbatch", "--wait", "-n", "2", "--mem=1000", "-o", str(out), "--wrap",
                    f"{sys.executable} {script}"], check=True, capture_output=True, timeout=300)
    text = out.read_text()
    assert "TIME LIMIT: stopped for the time limit" in text and "Terminated" not in text, text


@pytest.fixture(scope="module")
def timelimit_run(test_cluster, tmp_path_factory):
    """Pretraining as one Slurm job of 2 tasks (2 JAX processes) under a 1-minute time limit,
    about three limits' worth of steps: SIGTERM 30 s before each limit, a checkpoint, a requeue,
    until it ends; beside it, the same pretraining uninterrupted in one process."""
    from crystalrl import distributed

    wd = make_workdir(tmp_path_factory.mktemp("timelimit"), TIME_LIMITED)
    data = "results/demo/data"
    rc, out, _ = _run(wd, "--cores", "2", f"{data}/tokens_train.parquet", f"{data}/tokens_val.parquet")
    assert rc == 0, out[-3000:]
    env = {**KNOBS, "CRYSTALRL_STOP_BEFORE_LIMIT_S": "30"}
    with open(wd / "slurm_run.log", "w") as log:
        t0 = time.time()
        proc = subprocess.Popen([*SM, "results/demo/models/base", "--profile", "slurm", *FAST_POLL,
                                 "--set-resources", "pretrain:runtime=1", *CONFIG], cwd=wd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **env}, start_new_session=True)
        # the same 2 processes, uninterrupted (over hundreds of steps 1 and 2 processes drift apart
        # by float rounding in the all-reduce, so only a 2-process run is the same run)
        distributed.launch([sys.executable, "-c", _REFERENCE, str(wd), str(wd / "reference.npz")], tasks=2)
        try:
            rc = proc.wait(timeout=1200)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=60)
    out = (wd / "slurm_run.log").read_text()
    assert rc == 0, out[-6000:]
    job = re.findall(r"rule pretrain.*?has been submitted with SLURM jobid (\d+)", out, re.S)[-1]
    info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    print(f"time-limited 2-task pretraining through Slurm: {time.time() - t0:.0f} s")
    return SimpleNamespace(wd=wd, out=out, reference=np.load(wd / "reference.npz"), job=job, scontrol=info,
                           log=(wd / "logs" / "demo" / "pretrain.log").read_text())


def test_time_limited_two_task_pretraining_completes_by_itself(timelimit_run):
    """Issue 24: no hand restarts. The job was requeued at least twice (each time after a
    checkpoint just before its limit), resumed, and ended with the uninterrupted run's parameters."""
    from crystalrl.model.store import load_model, params_of

    run = timelimit_run
    restarts = int(re.search(r"Restarts=(\d+)", run.scontrol).group(1))
    assert restarts >= 2 and "JobState=COMPLETED" in run.scontrol, run.scontrol
    # the rule log is the last start's (Snakemake replaces it); the checkpoint remembers every stop
    assert "starting 2 processes" in run.log and re.search(r"resumed from \S+ at step [1-9]", run.log), run.log[-3000:]
    stops = re.search(r"stopped for Slurm time limits (\d+) time\(s\) so far: (.*)", run.log)
    assert stops and int(stops.group(1)) == restarts and stops.group(2).count(f"Slurm job {run.job}") == restarts
    model, _ = load_model(run.wd / "results" / "demo" / "models" / "base")
    import jax
    leaves = jax.tree.leaves(params_of(model))
    diff = max(float(np.abs(np.asarray(a) - run.reference[f"arr_{i}"]).max()) for i, a in enumerate(leaves))
    assert diff < 1e-6, diff
