"""Snakemake behaviour: a changed stage config reruns that stage and its descendants only."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def make_workdir(tmp_path: Path, overrides: dict) -> Path:
    """A copy of the workflow (Snakefile, rules, scripts, configs, the default workflow
    profile and the SLURM profile) with an extra config file."""
    for part in ("Snakefile", "workflow", "config", "envs", "profiles", "slurm"):
        src = REPO / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / part)
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(overrides))
    return tmp_path


def snakemake(workdir: Path, *args: str, timeout: int = 1200) -> str:
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args, "--configfile", "config/demo.yaml", "extra.yaml"],
                          cwd=workdir, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def job_inputs(out: str, rule: str) -> list[str]:
    """The input files of the first `rule` job in a dry run's `-p` listing."""
    block = re.search(rf"^rule {rule}:\n(.*?)(?:\n\n|\Z)", out, re.S | re.M)
    assert block, out[-3000:]
    line = re.search(r"^\s*input: (.*)$", block.group(1), re.M)
    return line.group(1).split(", ") if line else []


def planned_jobs(out: str) -> dict[str, int]:
    """Rule -> count from the 'Job stats' table of a dry run."""
    if "Job stats:" not in out:
        return {}
    table = out.split("Job stats:")[-1].split("Reasons:")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m.group(1) != "total"}


def test_parse_imports_no_heavy_library(tmp_path):
    """Snakemake parses the workflow at every run and inside every Slurm job: reading and
    checking the config must not import pymatgen (3 s), torch or jax, which the stages
    import themselves."""
    wd = make_workdir(tmp_path, {})
    probe = ("import atexit, runpy, sys\n"
             "heavy = ('pymatgen', 'torch', 'jax', 'matplotlib', 'ase')\n"
             "atexit.register(lambda: print('HEAVY:', sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
             "sys.argv = ['snakemake', '-n', 'all', '--configfile', 'config/demo.yaml', 'extra.yaml']\n"
             "runpy.run_module('snakemake', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=wd, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Job stats:" in out, out[-3000:]
    assert "HEAVY: []" in out, re.findall(r"HEAVY: .*", out)
