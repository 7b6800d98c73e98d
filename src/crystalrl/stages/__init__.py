"""Stage entry points: what each Snakemake rule runs, one module per stage.

Every stage module has the same shape::

    def run(inputs, outputs, params: dict, log: logging.Logger, threads: int = 1) -> None

- `inputs` / `outputs`: the rule's named files, read by attribute (`inputs.samples`),
  built from `snakemake.input` / `.output` by `main` (from dicts by `run_stage`).
- `params`: the rule's `params:` as a dict of builtins (config subtrees and wildcard
  values), so that Snakemake reruns a stage exactly when they change.
- `log`: the logger of the rule's `log:` file; `threads`: the rule's `{threads}`.

Stages are the only code that reads and writes workflow artifacts. Library modules
below them take arrays, frames and dataclass configs, and never import a stage.
Workflow scripts are one line, `main("<stage>", snakemake)`; tests and notebooks call
`run_stage("<stage>", inputs, outputs, params)`.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from crystalrl.artifacts import advice_for, check_inputs, input_paths
from crystalrl.curves import CurveMirror
from crystalrl.devices import apply_memory_policy, check_devices
from crystalrl.distributed import launch, write_spec
from crystalrl.logs import close_log_files, get_logger
from crystalrl.runtime import keep_freed_memory, set_threads
from crystalrl.timelimit import EXIT_TIME_LIMIT, TimeLimit, catch_signals_early, checkpoint_step, requeue

#: The sample sets every model gets (results/{run}/samples/{model}/{set}.parquet):
#: "dist" draws space groups from the training distribution (paper Fig. 3, overall
#: rates), "per_sg" a fixed count in each evaluation space group (Fig. 4).
SAMPLE_SETS = ("dist", "per_sg")


def _items(obj):
    """(name, value) pairs of a Snakemake Namedlist or a dict."""
    return obj.items() if hasattr(obj, "items") else vars(obj).items()


def metrics_writer(path):
    """What a training stage hands the loop as `on_metrics`: the metrics table written
    atomically after each validation or PPO step, so TensorBoard and a user see it live."""
    from crystalrl.io import write_parquet_atomic

    return lambda df: write_parquet_atomic(df, path)


def named(files) -> SimpleNamespace:
    """A Snakemake Namedlist (or a dict) -> a namespace of its named entries as strings / lists."""
    return SimpleNamespace(**{k: [str(x) for x in v] if isinstance(v, (list, tuple)) else str(v)
                              for k, v in _items(files)})


#: The frameworks each GPU stage runs its models in: what must see a GPU (`crystalrl.devices`).
USES = {"train": {"jax"}, "sample": {"jax"}, "ppo": {"jax", "torch"}, "relax": {"torch"}, "evaluate": {"torch"},
        "train_dielectric": {"torch"}, "predict_dielectric": {"torch"}}


def main(stage: str, snakemake) -> None:
    """Run stage `stage` with a Snakemake `script:` object's files, params, log and threads.

    Threads are limited before the stage module is imported, since torch, JAX and
    BLAS read their thread settings when they load; freed memory is kept for reuse
    (`keep_freed_memory`: MLIP autograd passes spent much of their time in page faults).
    Parquet inputs are checked first; a failure goes to the rule's log with its traceback
    and one line saying which artifact is at fault and what to do (`crystalrl.artifacts`).
    A job with several tasks (resources `tasks`, `nodes`) runs the stage in that many JAX
    processes (`crystalrl.distributed`); a stage stopped at a Slurm time limit requeues
    its job (`crystalrl.timelimit`).
    """
    set_threads(snakemake.threads)
    keep_freed_memory()
    catch_signals_early()
    # handlers on the package logger: the stage's lines and every library module's (crystalrl.hull,
    # crystalrl.relax.batched's progress, ...) reach the rule's log once each
    get_logger("crystalrl", snakemake.log[0] if snakemake.log else None)
    log = logging.getLogger(f"crystalrl.{stage}")
    inputs, outputs = named(snakemake.input), named(snakemake.output)
    params = dict(_items(snakemake.params))
    resources = dict(_items(getattr(snakemake, "resources", None) or {}))
    threads = int(snakemake.threads)
    paths = input_paths(inputs)
    tasks, nodes = int(resources.get("tasks") or 1), int(resources.get("nodes") or 1)
    saved_before = checkpoint_step(params.get("ckpt_dir"))
    # live curves of the training stages: their metrics table mirrored into TensorBoard (crystalrl.curves)
    curves = CurveMirror(outputs.metrics, log=log) if stage in ("train", "ppo") and hasattr(outputs, "metrics") \
        else contextlib.nullcontext()
    try:
        check_inputs(paths)
        if tasks > 1:
            spec = write_spec(Path(snakemake.log[0] if snakemake.log else ".").with_suffix(".spec.json"),
                              stage=stage, inputs=vars(inputs), outputs=vars(outputs), params=params,
                              log=snakemake.log[0] if snakemake.log else None, threads=threads, resources=resources)
            with curves:
                launch([sys.executable, "-m", "crystalrl.stages", spec], tasks, nodes, log=log,
                       stop_file=Path(spec).with_suffix(".stopped"))
        else:
            with curves:
                _run(stage, inputs, outputs, params, log, threads, resources)
    except TimeLimit:
        why = requeue(checkpoint_step(params.get("ckpt_dir")) > saved_before, log=log)
        if why is None:
            raise SystemExit(EXIT_TIME_LIMIT) from None  # Slurm is putting the job back in the queue
        log.error("stopped at the time limit and not requeued: %s", why)
        raise
    except Exception as exc:
        log.error("stage %s failed", stage, exc_info=True)
        log.error("what to do: %s", advice_for(exc, paths, _check_model_dir))
        raise
    finally:
        close_log_files("crystalrl")  # the next stage of this process (tests, notebooks) logs to its own file


#: Model hubs the libraries would otherwise reach for at load time. Jobs that run models read
#: every file from resources/ (local download rules fetched them on the submitting host).
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _run(stage, inputs, outputs, params, log, threads, resources) -> None:
    """The stage in this process, on the devices its job must use, with the model hubs offline."""
    uses = USES.get(stage, set())
    if uses:
        for k, v in OFFLINE.items():
            os.environ.setdefault(k, v)
    if uses >= {"jax", "torch"}:
        apply_memory_policy()  # before JAX starts
    check_devices(stage, uses, resources)
    module = importlib.import_module(f"crystalrl.stages.{stage}")
    module.run(inputs, outputs, params, log, threads=threads)


def run_worker(spec_path: str) -> int:
    """One process of a job with several (`python -m crystalrl.stages <spec.json>`): joins the
    others, runs the stage, and returns its exit status. After a time-limit stop it says so in
    the stop file and leaves with the others, status 0 (`distributed.mark_stopped`)."""
    from crystalrl import distributed

    catch_signals_early()
    spec = json.loads(Path(spec_path).read_text())
    distributed.initialize()
    set_threads(spec["threads"])
    keep_freed_memory()
    rank = distributed.process_index()
    get_logger("crystalrl", spec["log"], level=None if rank == 0 else "WARNING")
    log = logging.getLogger(f"crystalrl.{spec['stage']}.p{rank}")
    try:
        _run(spec["stage"], named(spec["inputs"]), named(spec["outputs"]), spec["params"], log, spec["threads"],
             spec["resources"])
    except TimeLimit:
        status = distributed.mark_stopped()
    except Exception:
        log.error("process %d of stage %s failed", rank, spec["stage"], exc_info=True)
        return 1
    else:
        status = 0
    distributed.barrier("crystalrl-stage-done")  # process 0 hosts the coordinator: leave together
    return status


def _check_model_dir(path) -> None:
    """ArtifactError when `path` is a model directory whose config or parameters cannot be read."""
    from crystalrl.model.store import is_model_dir, load_model

    if is_model_dir(path):
        load_model(path)


def run_stage(stage: str, inputs: dict, outputs: dict, params: dict, log: str | None = None,
              threads: int = 1, resources: dict | None = None) -> None:
    """Run stage `stage` on plain dicts of files and params (tests, notebooks), as a rule would."""
    main(stage, SimpleNamespace(input=inputs, output=outputs, params=params, resources=resources or {},
                                log=[str(log)] if log else [], threads=threads))


__all__ = ["SAMPLE_SETS", "USES", "main", "named", "run_stage", "run_worker"]
