"""Workflow scripts must run under Snakemake's `script:` directive, which prepends a preamble."""
import importlib
import re
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "workflow" / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_compiles_after_a_preamble(script):
    # `from __future__` after Snakemake's preamble is a SyntaxError at run time
    compile("import sys\n" + script.read_text(), str(script), "exec")


BENCH = sorted((Path(__file__).resolve().parents[1] / "bench").glob("*.*"))
IMPORT_RE = re.compile(r"^\s*from (crystalrl[\w.]*) import \(?([\w, \n]+?)\)?\s*$", re.M)


@pytest.mark.parametrize("script", [p for p in BENCH if p.suffix in (".py", ".sh")], ids=lambda p: p.name)
def test_bench_scripts_import_names_that_exist(script):
    """Benchmarks (and the GPU check's Python) run rarely, by hand or on a lent GPU: a name
    removed from the package must fail here, not on the GPU machine."""
    text = script.read_text()
    missing = []
    for module, names in IMPORT_RE.findall(text):
        mod = importlib.import_module(module)
        for name in (n.split(" as ")[0].strip() for n in names.replace("\n", " ").split(",")):
            if name and not hasattr(mod, name):
                try:
                    importlib.import_module(f"{module}.{name}")
                except ImportError:
                    missing.append(f"{module}.{name}")
    assert not missing, f"{script.name} imports names that no longer exist: {missing}"
