"""Workflow scripts must run under Snakemake's `script:` directive, which prepends a preamble."""
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "workflow" / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_compiles_after_a_preamble(script):
    # `from __future__` after Snakemake's preamble is a SyntaxError at run time
    compile("import sys\n" + script.read_text(), str(script), "exec")
