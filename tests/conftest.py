"""Shared fixtures: paths to ../shared, skipped with a reason when absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a missing model must fail at once, never download
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = Path(__file__).resolve().parents[1]
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
