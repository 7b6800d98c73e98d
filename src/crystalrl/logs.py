"""Stage logging: each line once to stderr and once to the rule's `log:` file."""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path


def get_logger(name: str, logfile: str | os.PathLike | None = None, level: str | None = None) -> logging.Logger:
    """A logger writing each line once to stderr and, if given, once to the rule's `log:` file
    (from `level` up, default INFO). It does not pass lines on to the root logger: a library
    that configures the root (absl, snakemake's own) would print every line a second time in
    its format. Loggers of modules below `name` need no handlers: their lines come here."""
    logger = logging.getLogger(name)
    logger.setLevel(level or logging.INFO)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not any(type(h) is logging.StreamHandler for h in logger.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        logger.addHandler(h)
    if logfile is not None:
        path = os.path.abspath(logfile)
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == path for h in logger.handlers):
            Path(logfile).parent.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(logfile)
            fh.setFormatter(fmt)
            logger.addHandler(fh)
    return logger


def close_log_files(name: str) -> None:
    """Close and remove the file handlers of logger `name` (a stage's log is done)."""
    logger = logging.getLogger(name)
    for h in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
        logger.removeHandler(h)
        h.close()


class Progress:
    """How far a long loop is, as lines in the rule's log: "relax: 120/500 (24%), 3.1/s, about
    2 min left", at most once per `every_s` seconds, and a last line when it ends after one.

    A job on a Slurm node has no terminal, so a progress bar shows nothing where it matters;
    a loop that ends within `every_s` writes nothing at all.
    """

    def __init__(self, what: str, total: int, log: logging.Logger, every_s: float = 60.0, clock=time.monotonic):
        self.what, self.total, self.log, self.every_s, self.clock = what, int(total), log, every_s, clock
        self.done, self.t0 = 0, clock()
        self.last = self.t0
        self.lines = 0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.every_s or (self.done >= self.total and self.lines):
            self.last = now
            self.lines += 1
            self.log.info("%s", self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self.t0, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = f"{self.what}: {self.done}/{self.total} ({pct:.0f}%), {rate:.3g}/s"
        if self.done >= self.total:
            return text + f", done in {elapsed / 60:.1f} min"
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        return text + (f", about {left / 60:.0f} min left" if math.isfinite(left) else "")
