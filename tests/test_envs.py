"""The per-rule conda envs pin exactly what pyproject.toml pins for their group."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV_EXTRA = {"data.yaml": None, "model.yaml": "model", "mlip.yaml": "mlip"}


def _name(req: str) -> str:
    return re.split(r"[\[<>=!~ ]", req, maxsplit=1)[0].lower().replace("_", "-")


def _pins(reqs) -> dict[str, str]:
    """package -> version spec, extras dropped (jax[cuda12]==x pins the same jax as jax==x)."""
    out = {}
    for r in reqs:
        r = r.strip()
        if r.startswith("-"):
            continue
        out[_name(r)] = re.sub(r"^[^<>=!~]*", "", re.sub(r"\[.*?\]", "", r))
    return out


def _env_pip(path: Path) -> tuple[dict[str, str], list[str]]:
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return _pins(pip), [p for p in pip if p.startswith("-e")]


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("env_file", sorted(ENV_EXTRA))
def test_env_matches_pyproject(env_file, project):
    extra = ENV_EXTRA[env_file]
    want = _pins(project["dependencies"])
    if extra:
        want.update(_pins(project["optional-dependencies"][extra]))
    got, editable = _env_pip(REPO / "envs" / env_file)
    assert got == want, (
        f"envs/{env_file} and pyproject.toml disagree: only in env {sorted(set(got) - set(want))}, "
        f"only in pyproject {sorted(set(want) - set(got))}, "
        f"different pins {sorted(k for k in set(got) & set(want) if got[k] != want[k])}"
    )
    expected_install = f"-e ..[{extra}]" if extra else "-e .."
    assert editable == [expected_install], f"envs/{env_file} must install the package as {expected_install}"


def test_every_rule_names_an_existing_env():
    rules = (REPO / "workflow" / "rules").glob("*.smk")
    named = {m for f in rules for m in re.findall(r'f"\{ENVS\}/(\w+\.yaml)"', f.read_text())}
    assert named, "no rule names a conda env"
    assert named <= set(ENV_EXTRA), f"rules name envs that do not exist: {named - set(ENV_EXTRA)}"
