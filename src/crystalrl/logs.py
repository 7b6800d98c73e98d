"""Stage logging: each line once to stderr and once to the rule's `log:` file."""
from __future__ import annotations

import logging
import os
import sys
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
