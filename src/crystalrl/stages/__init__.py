"""Stage entry points: what each Snakemake rule runs, one module per stage.

Every stage module has the same shape::

    def run(inputs, outputs, params: dict, log: logging.Logger, threads: int = 1) -> None

- `inputs` / `outputs`: the rule's named files, read by attribute (`inputs.samples`);
  a `types.SimpleNamespace` in tests, built from `snakemake.input` / `.output` by `main`.
- `params`: the rule's `params:` as a dict of builtins (config subtrees and wildcard
  values), so that Snakemake reruns a stage exactly when they change.
- `log`: the logger of the rule's `log:` file; `threads`: the rule's `{threads}`.

Stages are the only code that reads and writes workflow artifacts. Library modules
below them take arrays, frames and dataclass configs, and never import a stage.
Workflow scripts are one line: `main("<stage>", snakemake)`.
"""
from __future__ import annotations

import importlib
from types import SimpleNamespace

from crystalrl.io import get_logger, set_threads


def named(files) -> SimpleNamespace:
    """A Snakemake Namedlist (or a dict) -> a namespace of its named entries."""
    items = files.items() if hasattr(files, "items") else dict(files).items()
    return SimpleNamespace(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in items})


def main(stage: str, snakemake) -> None:
    """Run stage `stage` with a Snakemake `script:` object's files, params, log and threads.

    Threads are limited before the stage module is imported, since torch, JAX and
    BLAS read their thread settings when they load.
    """
    set_threads(snakemake.threads)
    module = importlib.import_module(f"crystalrl.stages.{stage}")
    log = get_logger(f"crystalrl.{stage}", snakemake.log[0] if snakemake.log else None)
    module.run(named(snakemake.input), named(snakemake.output), dict(snakemake.params.items()),
               log, threads=int(snakemake.threads))


def files(**paths) -> SimpleNamespace:
    """A namespace of files for calling a stage from a test or a notebook."""
    return SimpleNamespace(**{k: [str(x) for x in v] if isinstance(v, (list, tuple)) else str(v)
                              for k, v in paths.items()})


__all__ = ["files", "main", "named"]
