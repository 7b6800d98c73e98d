"""Shared fixtures: paths to ../shared, skipped with a reason when absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a missing model must fail at once, never download
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = Path(__file__).resolve().parents[1]
# Many tests (and the demo's snakemake jobs, which inherit this) compile the same jitted
# programs; JAX's persistent cache turns the repeats into disk reads.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache"))
SHARED = Path(os.environ.get("CRYSTALRL_SHARED", REPO.parent / "shared"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared folder); absent on this checkout")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED / "data")


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    return _need(SHARED / "reference")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


# Small and fast for CI (about 2 minutes on 2 busy cores); the workflow default is larger.
DIELECTRIC_FAST_CFG = {"seed": 0, "epochs": 10, "lr": 3e-3,
                       "model": {"cutoff": 4.0, "threebody_cutoff": 3.0},
                       "band_gap": {"epochs": 5, "lr": 3e-3}}


@pytest.fixture(scope="session")
def trained_dielectric(shared_data, tmp_path_factory):
    """The `train_dielectric` stage run on the real MP DFPT set with a small config.

    Session-scoped: the dielectric tests and the demo's FoM test share one training.
    """
    from types import SimpleNamespace

    from crystalrl.stages import run_stage

    data = shared_data / "mp_dielectric" / "dielectric_constant.json.gz"
    out = tmp_path_factory.mktemp("dielectric")
    outputs = dict(eps_model=str(out / "models" / "eps"), gap_model=str(out / "models" / "gap"),
                   metrics=str(out / "metrics" / "dielectric.json"))
    run_stage("train_dielectric", dict(data=data), outputs,
              dict(dielectric={"enabled": True, "data": str(data), **DIELECTRIC_FAST_CFG}), log=out / "train.log")
    return SimpleNamespace(**outputs)
