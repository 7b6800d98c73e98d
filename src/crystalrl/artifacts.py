"""Artifacts a stage cannot read: which file, and what to do about it, in the rule's log.

Snakemake answers a failed job with "check log file(s)"; the log must then say more
than a pyarrow or TensorStore traceback does. A stage's Parquet inputs are checked
before it runs (their footers: a truncated or overwritten file fails here), model
directories when they are loaded (`crystalrl.model.store.load_model`), and when a
stage fails anyway with a decoding error, its inputs are read in full to find the
one at fault. Every such error names the file and the command that rebuilds it:
Snakemake's `--forcerun` takes files as well as rules, and reruns the rule that
wrote that file and everything downstream of it.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path


class ArtifactError(RuntimeError):
    """An artifact cannot be read: `path`, what is wrong with it, and what to do (`advice`)."""

    def __init__(self, path: str | os.PathLike, problem: str, advice: str | None = None):
        self.path, self.problem = str(path), problem
        self.advice = advice or rebuild_advice(path)
        super().__init__(f"{self.path}: {problem}. {self.advice}")


def rebuild_advice(path: str | os.PathLike) -> str:
    return (f"To rebuild it, rerun the rule that wrote it: snakemake --forcerun {path} "
            "(with your usual --configfile/--profile options)")


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"


def check_parquet(path: str | os.PathLike, *, full: bool = False) -> None:
    """ArtifactError unless `path` is a readable Parquet file: its footer (cheap), or every page (`full`)."""
    import pyarrow.parquet as pq

    try:
        if full:
            pq.read_table(path)
        else:
            pq.read_metadata(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise ArtifactError(path, f"not a readable Parquet file, truncated or corrupt ({_first_line(exc)})") from exc


def input_paths(inputs) -> list[Path]:
    """Every file or folder a stage's named inputs point to."""
    out = []
    for value in vars(inputs).values():
        for v in [value] if isinstance(value, str) else value or []:
            out.append(Path(v))
    return out


def check_inputs(paths: Iterable[Path]) -> None:
    """The cheap checks, before a stage runs: every Parquet input has a readable footer."""
    for p in paths:
        if p.suffix == ".parquet" and p.is_file():
            check_parquet(p)


def _looks_like_decoding(exc: BaseException) -> bool:
    """A library's error on damaged data (pyarrow, TensorStore/Orbax, JSON), anywhere in the chain."""
    markers = ("magic bytes", "parquet", "arrow", "tensorstore", "ocdbt", "zarr", "data_loss",
               "out_of_range", "decode", "deserializ", "corrupt", "truncated", "expecting value",
               "invalid data stream", "not a gzipped file", "end-of-stream", "compressed")
    while exc is not None:
        mod = type(exc).__module__ or ""
        if mod.startswith(("pyarrow", "tensorstore", "json")) or any(m in str(exc).lower() for m in markers):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def find_unreadable(paths: Iterable[Path], check_dir: Callable[[Path], None] | None = None
                    ) -> ArtifactError | None:
    """The first input that cannot be read in full, or None: Parquet and compressed files here,
    folders by `check_dir` (raising ArtifactError; the stages pass the model directory loader).

    Runs only after a stage failed with a decoding error, so it may read everything.
    """
    for p in paths:
        try:
            if p.suffix == ".parquet" and p.is_file():
                check_parquet(p, full=True)
            elif p.suffix in _OPENERS and p.is_file():
                _check_compressed(p)
            elif p.is_dir() and check_dir is not None:
                check_dir(p)
        except ArtifactError as err:
            return err
    return None


_OPENERS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}


def _check_compressed(path: Path) -> None:
    """ArtifactError unless the compressed file `path` decompresses to its end (a download cut short does not)."""
    import importlib

    opener = importlib.import_module(_OPENERS[path.suffix]).open
    try:
        with opener(path, "rb") as f:
            while f.read(1 << 22):
                pass
    except (OSError, EOFError, ValueError) as exc:
        raise ArtifactError(path, f"truncated or corrupt {_OPENERS[path.suffix]} file ({_first_line(exc)})") from exc


def advice_for(exc: BaseException, paths: list[Path], check_dir: Callable[[Path], None] | None = None) -> str:
    """One line for the rule log: the artifact at fault and what to do, where that can be told."""
    if isinstance(exc, ArtifactError):
        return f"unreadable artifact {exc.path}: {exc.advice}"
    if _looks_like_decoding(exc):
        culprit = find_unreadable(paths, check_dir)
        if culprit is not None:
            return f"unreadable artifact {culprit.path} ({culprit.problem}): {culprit.advice}"
    return (f"{_first_line(exc)}. The traceback above says where; the job's inputs were "
            f"{', '.join(map(str, paths)) or 'none'}. Fix the cause and rerun snakemake: it reruns this job.")
