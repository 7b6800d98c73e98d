"""Several JAX processes in one training job: Slurm tasks on one node or on several.

A job asks for them with config `processes.<stage>` (nodes x tasks per node). Its rule
script then starts one worker per task and waits for them (`launch`): inside a Slurm
allocation with `srun`, elsewhere as local subprocesses (tests, a workstation). Each
worker calls `initialize()` before anything touches a JAX device:

- under `srun`, `jax.distributed.initialize()` reads the coordinator, process count and
  id from the step's environment;
- locally, from CRYSTALRL_COORDINATOR / CRYSTALRL_NUM_PROCESSES / CRYSTALRL_PROCESS_ID.

On CPUs the processes talk through Gloo. `jax.devices()` then lists every device of the
job; the training mesh spans them all, each process feeds the rows of the global batch
that its own devices hold (`global_batch`), and XLA all-reduces the gradients. Every
process computes and checkpoints (Orbax coordinates them); only process 0 writes
artifacts and metrics (`is_primary`).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ENV_COORDINATOR = "CRYSTALRL_COORDINATOR"
ENV_NUM_PROCESSES = "CRYSTALRL_NUM_PROCESSES"
ENV_PROCESS_ID = "CRYSTALRL_PROCESS_ID"
#: File the workers create when they stopped at a time limit: they then exit 0 together, since
#: srun's --kill-on-bad-exit would kill a worker still saving when the first exits non-zero.
ENV_STOP_FILE = "CRYSTALRL_STOP_FILE"

_initialized = False


def initialize(env: Mapping[str, str] = os.environ) -> int:
    """Join the job's other processes, if it has any; returns the process count.

    Must run before JAX creates its backend (any device use). One process (no Slurm
    step of several tasks, no CRYSTALRL_NUM_PROCESSES) does nothing.
    """
    global _initialized
    n_local = int(env.get(ENV_NUM_PROCESSES, "1") or 1)
    n_slurm = int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")) or 1) if "SLURM_STEP_ID" in env else 1
    if _initialized or max(n_local, n_slurm) <= 1:
        return max(n_local, n_slurm) if _initialized else 1
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes; GPUs use NCCL
    if n_local > 1:
        jax.distributed.initialize(coordinator_address=env[ENV_COORDINATOR], num_processes=n_local,
                                   process_id=int(env[ENV_PROCESS_ID]))
    else:
        jax.distributed.initialize()  # the srun step's SLURM_* variables
    _initialized = True
    return jax.process_count()


def process_index() -> int:
    import jax

    return jax.process_index()


def is_primary() -> bool:
    """Whether this process writes the job's artifacts, metrics and logs (process 0)."""
    return process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process of the job reaches this point (no-op with one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def local_rows(n_rows: int) -> slice:
    """The rows of an `n_rows` global batch that this process feeds: its share, in process order."""
    import jax

    n_proc, p = jax.process_count(), jax.process_index()
    if n_rows % n_proc:
        raise ValueError(f"a batch of {n_rows} rows does not split evenly over {n_proc} processes")
    per = n_rows // n_proc
    return slice(p * per, (p + 1) * per)


def global_batch(rows: Mapping, sharding) -> dict:
    """A global batch on `sharding` (rows split over the job's devices) from this process's rows.

    With one process `rows` are the whole batch; with several, each gives its `local_rows`.
    """
    import jax

    if jax.process_count() == 1:
        return jax.device_put(dict(rows), sharding)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in rows.items()}


def replicated(tree, sharding):
    """Every array of `tree` (the same values in every process) placed on the replicated
    `sharding` of the job's mesh; `jax.device_put` cannot place onto other processes' devices."""
    import jax
    import numpy as np

    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):  # dropout keys
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree.map(put, tree)


def fetch(tree):
    """Replicated arrays (the parameters, a metric) as numpy, from this process's own copy."""
    import jax
    import numpy as np

    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)


# ---------------------------------------------------------------- starting the workers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(argv: Sequence[str], tasks: int, nodes: int, env: Mapping[str, str] = os.environ) -> list[str] | None:
    """The `srun` line that starts `argv` once per task inside this Slurm allocation, or None
    outside one (then `launch` starts local processes)."""
    if "SLURM_JOB_ID" not in env or shutil.which("srun") is None:
        return None
    return ["srun", f"--ntasks={tasks}", f"--nodes={nodes}", f"--ntasks-per-node={tasks // nodes}",
            "--kill-on-bad-exit=1", "--overlap", *argv]


def launch(argv: Sequence[str], tasks: int, nodes: int = 1, env: Mapping[str, str] | None = None,
           log=None, stop_file: str | os.PathLike | None = None) -> None:
    """Run `argv` as `tasks` processes of one JAX job and wait; RuntimeError if any fails,
    TimeLimit if they stopped at a time limit.

    `stop_file` (on a file system every node sees; a temporary file by default): where the
    workers say they stopped at a time limit (`mark_stopped`)."""
    import tempfile

    env = dict(os.environ if env is None else env)
    with tempfile.TemporaryDirectory() as tmp:
        stop = Path(stop_file) if stop_file else Path(tmp) / "stopped"
        stop.unlink(missing_ok=True)  # a stop of an earlier start of this job
        env[ENV_STOP_FILE] = str(stop)
        codes, what, terminated = _start_and_wait(argv, tasks, nodes, env, log)
        _raise_for(codes, what, terminated=terminated, stopped=stop.exists())


def _start_and_wait(argv, tasks, nodes, env, log) -> tuple[list[int], str, bool]:
    """The workers' exit statuses, what they were, and whether this process got SIGTERM meanwhile."""
    cmd = launch_command(argv, tasks, nodes, env)
    if cmd is not None:
        if log:
            log.info("starting %d processes on %d node(s): %s", tasks, nodes, shlex.join(cmd))
        # The job's SIGTERM (time limit, preemption) is for the workers, which checkpoint and stop;
        # this process waits for them and then requeues the job (crystalrl.timelimit).
        terminated: list[int] = []
        old = signal.signal(signal.SIGTERM, lambda signum, _: terminated.append(signum))
        try:
            rc = subprocess.run(cmd, env=env).returncode
        finally:
            signal.signal(signal.SIGTERM, old)
        return [rc], f"{tasks} processes under srun", bool(terminated)
    if nodes > 1:
        raise RuntimeError(f"{nodes} nodes asked for, but this is not a Slurm allocation (no SLURM_JOB_ID/srun)")
    coordinator = f"127.0.0.1:{_free_port()}"
    if log:
        log.info("starting %d local processes (coordinator %s)", tasks, coordinator)
    procs = [subprocess.Popen(list(argv), env={**env, ENV_COORDINATOR: coordinator, ENV_NUM_PROCESSES: str(tasks),
                                               ENV_PROCESS_ID: str(i)}) for i in range(tasks)]
    while any(p.poll() is None for p in procs):  # one failed: the others would wait for it forever
        if any(p.poll() for p in procs):
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        time.sleep(0.2)
    return [p.returncode for p in procs], f"{tasks} local processes", False


def mark_stopped(env: Mapping[str, str] = os.environ) -> int:
    """In a worker that stopped at a time limit (after its checkpoint): tell `launch`, and
    return the exit status (0 when `launch` reads the stop file, else EXIT_TIME_LIMIT)."""
    from crystalrl.timelimit import EXIT_TIME_LIMIT

    if not env.get(ENV_STOP_FILE):
        return EXIT_TIME_LIMIT
    Path(env[ENV_STOP_FILE]).touch()
    return 0


def _raise_for(codes: list[int], what: str, terminated: bool = False, stopped: bool = False) -> None:
    """TimeLimit when the processes stopped for a time limit: they said so (`stopped`, the
    stop file) and every status is 0 or EXIT_TIME_LIMIT, or this process got the job's
    SIGTERM too (the limit itself, a preemption) and they ended by it (status 143, or -15
    from Popen). The caller requeues only if a checkpoint beyond the start exists.
    RuntimeError for any other failure."""
    from crystalrl.timelimit import EXIT_TIME_LIMIT, TimeLimit

    if not any(codes) and not stopped:
        return
    ok = {0, EXIT_TIME_LIMIT} | ({128 + signal.SIGTERM, -signal.SIGTERM} if terminated else set())
    if set(codes) <= ok:
        raise TimeLimit(-1, what + (" (ended by the job's SIGTERM)" if terminated else ""))
    raise RuntimeError(f"{what} ended with exit statuses {codes} (their errors are in the log above)")


def write_spec(path, **spec) -> str:
    """A worker's arguments as JSON (what `launch` passes on the command line)."""
    with open(path, "w") as f:
        json.dump(spec, f, default=str)
    return str(path)


__all__ = ["barrier", "fetch", "global_batch", "replicated", "initialize", "is_primary", "launch", "launch_command",
           "local_rows", "mark_stopped", "process_index", "write_spec"]

if __name__ == "__main__":  # pragma: no cover - `python -m crystalrl.distributed` is not an entry point
    sys.exit("crystalrl.distributed is a library; workers run `python -m crystalrl.stages <spec.json>`")
