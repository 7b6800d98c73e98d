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

import importlib
from types import SimpleNamespace

from crystalrl.artifacts import advice_for, check_inputs, input_paths
from crystalrl.io import get_logger, keep_freed_memory, set_threads

#: The sample sets every model gets (results/{run}/samples/{model}/{set}.parquet):
#: "dist" draws space groups from the training distribution (paper Fig. 3, overall
#: rates), "per_sg" a fixed count in each evaluation space group (Fig. 4).
SAMPLE_SETS = ("dist", "per_sg")


def _items(obj):
    """(name, value) pairs of a Snakemake Namedlist or a dict."""
    return obj.items() if hasattr(obj, "items") else vars(obj).items()


def named(files) -> SimpleNamespace:
    """A Snakemake Namedlist (or a dict) -> a namespace of its named entries as strings / lists."""
    return SimpleNamespace(**{k: [str(x) for x in v] if isinstance(v, (list, tuple)) else str(v)
                              for k, v in _items(files)})


def main(stage: str, snakemake) -> None:
    """Run stage `stage` with a Snakemake `script:` object's files, params, log and threads.

    Threads are limited before the stage module is imported, since torch, JAX and
    BLAS read their thread settings when they load; freed memory is kept for reuse
    (`keep_freed_memory`: MLIP autograd passes spent much of their time in page faults).
    Parquet inputs are checked first; a failure goes to the rule's log with its traceback
    and one line saying which artifact is at fault and what to do (`crystalrl.artifacts`).
    """
    set_threads(snakemake.threads)
    keep_freed_memory()
    log = get_logger(f"crystalrl.{stage}", snakemake.log[0] if snakemake.log else None)
    inputs = named(snakemake.input)
    paths = input_paths(inputs)
    try:
        check_inputs(paths)
        module = importlib.import_module(f"crystalrl.stages.{stage}")
        module.run(inputs, named(snakemake.output), dict(_items(snakemake.params)), log,
                   threads=int(snakemake.threads))
    except Exception as exc:
        log.error("stage %s failed", stage, exc_info=True)
        log.error("what to do: %s", advice_for(exc, paths, _check_model_dir))
        raise


def _check_model_dir(path) -> None:
    """ArtifactError when `path` is a model directory whose config or parameters cannot be read."""
    from crystalrl.model.store import is_model_dir, load_model

    if is_model_dir(path):
        load_model(path)


def run_stage(stage: str, inputs: dict, outputs: dict, params: dict, log: str | None = None,
              threads: int = 1) -> None:
    """Run stage `stage` on plain dicts of files and params (tests, notebooks), as a rule would."""
    main(stage, SimpleNamespace(input=inputs, output=outputs, params=params,
                                log=[str(log)] if log else [], threads=threads))


__all__ = ["SAMPLE_SETS", "main", "named", "run_stage"]
