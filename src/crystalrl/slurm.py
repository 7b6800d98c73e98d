"""Cluster sizing and the pre-flight check of Slurm runs.

Two things a Slurm run needs that Snakemake's plugin does not do:

- **Sizing from a few knobs.** `ClusterSettings.from_env` reads the `CRYSTALRL_*`
  environment variables (partitions, account, GPU type, node size, memory and runtime
  scaling); `job_resources` and `job_threads` turn a rule's own figures into what it
  asks Slurm for. A user points the one profile at a cluster by setting these, never by
  copying the profile.
- **Pre-flight.** Slurm accepts a job that no node of its partition can hold and lets it
  pend forever (`Reason=PartitionConfig`) while Snakemake prints nothing. `parse_sinfo`
  reads the partitions' nodes, `misfits` names every rule whose request fits none of
  them, and `status_polling_problem` says when the plugin could not see finished jobs
  (a cluster without accounting polled with `sacct`). `workflow/rules/preflight.smk`
  runs these before the first job is submitted.

Pure functions on text and dicts; the commands are run in preflight.smk.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

# `sinfo --noheader --Node --format=...`: one line per (node, partition).
SINFO_FORMAT = "%P|%N|%c|%m|%G|%l|%T"
SINFO_ARGS = ["sinfo", "--noheader", "--Node", f"--format={SINFO_FORMAT}"]

# Node states in which a node takes no new jobs (sinfo %T, suffixes such as `*` stripped).
_UNUSABLE = ("down", "drain", "drained", "draining", "fail", "failing", "inval", "future")

# The plugin polls job states at most every 180 s (hard-coded in 2.8); `squeue` must still
# show a finished job by then, i.e. Slurm's MinJobAge has to be longer.
PLUGIN_MAX_POLL_S = 180

ENV_HELP = "see docs/cluster.md"


# --------------------------------------------------------------------------- knobs
@dataclass(frozen=True)
class ClusterSettings:
    """What the environment says about the cluster (every field has an env variable)."""

    cpu_partition: str = "cpu"          # CRYSTALRL_CPU_PARTITION
    gpu_partition: str = "gpu"          # CRYSTALRL_GPU_PARTITION
    account: str = ""                   # CRYSTALRL_ACCOUNT ("" = the plugin's guess, or none)
    gpu_type: str = ""                  # CRYSTALRL_GPU_TYPE ("" = any GPU: --gpus=1)
    node_cpus: int | None = None        # CRYSTALRL_NODE_CPUS: cap on a job's threads/CPUs
    node_mem_mb: int | None = None      # CRYSTALRL_NODE_MEM_MB: cap on a job's memory
    mem_scale: float = 1.0              # CRYSTALRL_MEM_SCALE: x every rule's memory figure
    runtime_scale: float = 1.0          # CRYSTALRL_RUNTIME_SCALE: x every rule's runtime
    max_runtime: int | None = None      # CRYSTALRL_MAX_RUNTIME: cap on a job's minutes
    stop_before_limit_s: int = 600      # CRYSTALRL_STOP_BEFORE_LIMIT_S: checkpoint this long before a time limit

    ENV: ClassVar[dict] = {
        "cpu_partition": "CRYSTALRL_CPU_PARTITION",
        "gpu_partition": "CRYSTALRL_GPU_PARTITION",
        "account": "CRYSTALRL_ACCOUNT",
        "gpu_type": "CRYSTALRL_GPU_TYPE",
        "node_cpus": "CRYSTALRL_NODE_CPUS",
        "node_mem_mb": "CRYSTALRL_NODE_MEM_MB",
        "mem_scale": "CRYSTALRL_MEM_SCALE",
        "runtime_scale": "CRYSTALRL_RUNTIME_SCALE",
        "max_runtime": "CRYSTALRL_MAX_RUNTIME",
        "stop_before_limit_s": "CRYSTALRL_STOP_BEFORE_LIMIT_S",
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ClusterSettings:
        """Read the knobs; a malformed value stops the run naming its variable."""
        kw: dict = {}
        for name, var in cls.ENV.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            default = cls.__dataclass_fields__[name].default
            if isinstance(default, str):
                allowed = r"[A-Za-z0-9_.,-]+" if name.endswith("partition") else r"[A-Za-z0-9_.-]+"
                if not re.fullmatch(allowed, raw):
                    raise ValueError(f"{var}={raw!r}: expected a Slurm name (letters, digits, _ . -"
                                     f"{', or a comma-separated list' if ',' in allowed else ''}; {ENV_HELP})")
                kw[name] = raw
                continue
            try:
                value = float(raw) if isinstance(default, float) else int(raw)
            except ValueError:
                raise ValueError(f"{var}={raw!r}: expected a {'number' if isinstance(default, float) else 'whole number'}"
                                 f" ({ENV_HELP})") from None
            if value <= 0:
                raise ValueError(f"{var}={raw!r}: must be positive ({ENV_HELP})")
            kw[name] = value
        return cls(**kw)


def job_threads(threads: int, cluster: ClusterSettings) -> int:
    """A rule's threads, never more than a node's CPUs (the job asks --cpus-per-task=threads)."""
    return max(1, min(threads, cluster.node_cpus)) if cluster.node_cpus else threads


def job_resources(mem_mb: int, runtime: int, gpu: bool, cluster: ClusterSettings, *, gpus: int = 1,
                  nodes: int = 1, tasks_per_node: int = 1, stop_before_limit: bool = False) -> dict:
    """Resources of one rule: its memory and minutes scaled and capped, its partition, its GPUs,
    its tasks, and the signal before its time limit.

    These go into the rule's own `resources:` so that another profile or `--set-resources`
    changes one figure without dropping a GPU rule's partition and GPU (profiles replace
    whole top-level keys).
    - GPUs (`gpus` per node): `gpu: N` (`--gpus=N`, any GPU, typed or not) for one node
      without a type; `gres: gpu[:TYPE]:N` (per node) with a type or several nodes.
    - Several tasks (`nodes` x `tasks_per_node`): `mpi` keeps the plugin from wrapping the
      job in `srun -n1`; the stage starts its processes with srun itself
      (`crystalrl.distributed`). `tasks_per_gpu: 0` stops the plugin from turning `tasks`
      into `--ntasks-per-gpu` on GPU jobs.
    - `stop_before_limit`: the stage checkpoints and requeues CRYSTALRL_STOP_BEFORE_LIMIT_S
      seconds before the time limit (`crystalrl.timelimit`, from the job's own time left);
      `--signal=TERM@s` asks Slurm for a warning then too, as a backup, when s is at least
      120 (Slurm may send it up to a minute early, and only to job steps that exist).
    """
    mem = math.ceil(mem_mb * cluster.mem_scale)
    minutes = math.ceil(runtime * cluster.runtime_scale)
    res: dict = {
        "mem_mb": min(mem, cluster.node_mem_mb) if cluster.node_mem_mb else mem,
        "runtime": min(minutes, cluster.max_runtime) if cluster.max_runtime else minutes,
        "slurm_partition": cluster.gpu_partition if gpu else cluster.cpu_partition,
    }
    if cluster.account:
        res["slurm_account"] = cluster.account
    if gpu:
        if cluster.gpu_type or nodes > 1:
            res["gres"] = f"gpu:{cluster.gpu_type}:{gpus}" if cluster.gpu_type else f"gpu:{gpus}"
        else:
            res["gpu"] = gpus
    extra = []
    if nodes * tasks_per_node > 1:
        res.update(mpi="srun", tasks=nodes * tasks_per_node, nodes=nodes, tasks_per_gpu=0)
        extra.append(f"--ntasks-per-node={tasks_per_node}")
    if stop_before_limit and cluster.stop_before_limit_s >= 120:  # a backup of the job's own deadline
        extra.append(f"--signal=TERM@{cluster.stop_before_limit_s}")
    if extra:
        res["slurm_extra"] = " ".join(extra)
    return res


# --------------------------------------------------------------------------- sinfo
@dataclass(frozen=True)
class Node:
    """One node as one partition sees it."""

    name: str
    partition: str
    default: bool                       # the partition is the cluster's default
    cpus: int
    mem_mb: int
    gpus: dict = field(default_factory=dict)   # GPU type (None = untyped) -> count
    time_limit: int | None = None       # the partition's limit in minutes (None = infinite)
    state: str = "idle"

    @property
    def usable(self) -> bool:
        return self.state.rstrip("*~#!%$@^-+").lower() not in _UNUSABLE

    def describe(self) -> str:
        gpus = ",".join(f"gpu:{t}:{n}" if t else f"gpu:{n}" for t, n in sorted(self.gpus.items(), key=str)) or "no GPU"
        limit = "no time limit" if self.time_limit is None else f"time limit {self.time_limit} min"
        return f"{self.name} ({self.cpus} CPUs, {self.mem_mb} MB, {gpus}, {limit})"


def parse_gres(text: str) -> dict:
    """`gpu:a100:4(S:0-1),gpu:2,mps:100` -> {"a100": 4, None: 2}; other GRES are ignored."""
    gpus: dict = {}
    text = text.strip()
    if not text or text == "(null)":
        return gpus
    for item in re.split(r",(?![^()]*\))", text):
        parts = re.sub(r"\(.*?\)", "", item).strip().split(":")
        if parts[0] != "gpu":
            continue
        kind = parts[1] if len(parts) == 3 else None
        if len(parts) == 2 and not parts[1].isdigit():      # gpu:a100 (count 1)
            kind, count = parts[1], "1"
        else:
            count = parts[-1] if len(parts) > 1 else "1"
        gpus[kind] = gpus.get(kind, 0) + int(re.match(r"\d+", count).group())
    return gpus


def parse_time_limit(text: str) -> int | None:
    """Slurm time (`infinite`, `30:00`, `2:00:00`, `1-00:00:00`, `1-12`) -> minutes (None = none)."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:   # days-hours[:minutes[:seconds]]
        h, m, s = (parts + [0, 0])[:3]
        return int(days) * 1440 + h * 60 + m + math.ceil(s / 60)
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:    # minutes:seconds
        return parts[0] + math.ceil(parts[1] / 60)
    return parts[0] * 60 + parts[1] + math.ceil(parts[2] / 60)


def parse_sinfo(text: str) -> list[Node]:
    """Nodes from `sinfo` run with SINFO_ARGS."""
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 7:
            raise ValueError(f"unexpected sinfo line (format {SINFO_FORMAT}): {line!r}")
        part, name, cpus, mem, gres, limit, state = (f.strip() for f in fields)
        nodes.append(Node(name=name, partition=part.rstrip("*"), default=part.endswith("*"),
                          cpus=int(cpus), mem_mb=int(re.match(r"\d+", mem).group()), gpus=parse_gres(gres),
                          time_limit=parse_time_limit(limit), state=state))
    return nodes


# --------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Request:
    """What one job asks Slurm for, as the plugin turns its resources into sbatch options."""

    rule: str
    partition: str | None       # None: the cluster's default partition
    cpus: int
    mem_mb: int                 # 0: not given (Slurm's default applies)
    gpus: int = 0               # per node
    gpu_type: str | None = None
    runtime: int | None = None  # minutes
    nodes: int = 1
    tasks_per_node: int = 1     # each task has `cpus` CPUs

    def describe(self) -> str:
        cpus = self.cpus * self.tasks_per_node
        parts = [f"{cpus} CPUs", f"{self.mem_mb} MB" if self.mem_mb else "default memory"]
        if self.gpus:
            parts.append(f"{self.gpus} GPU" + (f" of type {self.gpu_type}" if self.gpu_type else ""))
        if self.runtime:
            parts.append(f"{self.runtime} min")
        nodes = f" on each of {self.nodes} nodes" if self.nodes > 1 else ""
        return ", ".join(parts) + f"{nodes} on partition {self.partition or '(default)'}"


def request_from_resources(rule: str, threads: int, resources: Mapping) -> Request:
    """The request of a job with these Snakemake threads and resources (plugin 2.8's rules:
    cpus_per_task if set, else threads; mem_mb_per_cpu x CPUs, else mem_mb; gpu (+ gpu_model)
    or gres gpu[:type][:n])."""
    def get(key, default=None):
        value = resources.get(key, default)
        return default if value in (None, "") else value

    cpus = get("cpus_per_task")
    cpus = threads if not cpus or int(cpus) <= 0 else int(cpus)
    mem = int(get("mem_mb_per_cpu", 0)) * cpus or int(get("mem_mb", 0))
    gpus, gpu_type = int(get("gpu", 0) or 0), get("gpu_model")
    gres = str(get("gres", ""))
    if gres.startswith("gpu"):
        parsed = parse_gres(gres)
        gpu_type, gpus = next(iter(parsed.items()))
    elif gpu_type and not gpus:
        gpus = 1
    runtime = get("runtime")
    nodes, tasks = int(get("nodes", 1)), int(get("tasks", 1))
    return Request(rule=rule, partition=get("slurm_partition"), cpus=cpus, mem_mb=mem, gpus=gpus,
                   gpu_type=gpu_type, runtime=int(runtime) if runtime else None, nodes=nodes,
                   tasks_per_node=max(1, tasks // nodes))


def _fits(req: Request, node: Node) -> bool:
    have_gpus = node.gpus.get(req.gpu_type, 0) if req.gpu_type else sum(node.gpus.values())
    return (req.cpus * req.tasks_per_node <= node.cpus and req.mem_mb <= node.mem_mb and req.gpus <= have_gpus
            and (req.runtime is None or node.time_limit is None or req.runtime <= node.time_limit))


def misfits(requests: Iterable[Request], nodes: list[Node]) -> list[str]:
    """One sentence per distinct request that no usable node of its partition can hold."""
    partitions = sorted({n.partition for n in nodes})
    default = next((n.partition for n in nodes if n.default), None)
    out = []
    for req in sorted(set(requests), key=lambda r: (r.rule, r.describe())):
        part = req.partition or default
        members = [n for n in nodes if n.partition in (part or "").split(",")]   # `-p a,b`: either
        if not members:
            where = f"partition {req.partition!r} does not exist" if req.partition else "the cluster has no default partition"
            out.append(f"rule {req.rule}: asks for {req.describe()}, but {where} (partitions: {', '.join(partitions)})")
            continue
        usable = [n for n in members if n.usable]
        fitting = [n for n in usable if _fits(req, n)]
        if len(fitting) >= req.nodes:
            continue
        if fitting:
            out.append(f"rule {req.rule}: asks for {req.describe()}, but only {len(fitting)} node(s) of partition "
                       f"{part} can hold it ({', '.join(n.name for n in fitting)})")
            continue
        if not usable:
            out.append(f"rule {req.rule}: asks for {req.describe()}, but no node of partition {part} takes jobs "
                       f"(states: {', '.join(sorted({n.name + ' ' + n.state for n in members}))})")
            continue
        largest = max(usable, key=lambda n: (sum(n.gpus.values()) if req.gpus else 0, n.cpus, n.mem_mb))
        out.append(f"rule {req.rule}: asks for {req.describe()}; the largest node of partition {part} is "
                   f"{largest.describe()}")
    return out


# --------------------------------------------------------------------------- status polling
def parse_scontrol_config(text: str) -> dict[str, str]:
    """`scontrol show config` -> {key: value}."""
    conf = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            conf[key.strip()] = value.strip()
    return conf


def min_job_age_s(conf: Mapping[str, str]) -> int | None:
    match = re.match(r"(\d+)", conf.get("MinJobAge", ""))
    return int(match.group(1)) if match else None


def effective_status_command(chosen: str | None, conf: Mapping[str, str], init_s: int,
                             sacct_installed: bool = True) -> str:
    """The command plugin 2.8 will really poll with: it swaps `squeue` for `sacct` when
    MinJobAge is under 3x its first polling interval, and takes `sacct` when nothing is chosen."""
    command = chosen or ("sacct" if sacct_installed else "squeue")
    age = min_job_age_s(conf)
    if command == "squeue" and sacct_installed and (age is None or age < 3 * init_s):
        command = "sacct"
    if command == "sacct" and not sacct_installed:
        command = "squeue"
    return command


def status_polling_problem(chosen: str | None, conf: Mapping[str, str], init_s: int,
                           sacct_installed: bool = True) -> str | None:
    """Why the plugin would lose track of finished jobs when asked to poll with `chosen`, or None.

    Without accounting (no slurmdbd) `sacct` only says "Slurm accounting storage is
    disabled": the plugin then never learns that a job ended and Snakemake waits forever.
    `squeue` sees a finished job for MinJobAge seconds, which must outlast the plugin's
    longest polling interval.
    """
    command = effective_status_command(chosen, conf, init_s, sacct_installed)
    age = min_job_age_s(conf)
    if command == "sacct" and conf.get("AccountingStorageType", "").endswith("/none"):
        why = ("this cluster keeps no accounting (AccountingStorageType=accounting_storage/none), so `sacct` "
               "cannot report job states and Snakemake would wait forever for finished jobs: ")
        if chosen == "squeue":
            return why + (f"the plugin polls with sacct although squeue was chosen, because MinJobAge ({age} s) is "
                          f"under 3x --slurm-init-seconds-before-status-checks ({init_s} s); ask for MinJobAge >= 300")
        return why + "poll with `--slurm-status-command squeue` (the project's profile does)"
    if command == "squeue" and (age is None or age <= PLUGIN_MAX_POLL_S):
        return (f"`squeue` forgets a finished job after MinJobAge ({conf.get('MinJobAge', 'unknown')}), sooner than "
                f"the plugin's longest polling interval ({PLUGIN_MAX_POLL_S} s), so Snakemake could wait forever: "
                "ask for MinJobAge >= 300 in slurm.conf, or poll with `--slurm-status-command sacct` where the "
                "cluster keeps accounting")
    return None
