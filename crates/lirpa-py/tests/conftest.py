"""Shared data of the Python tests: ``../shared`` beside the repository (or
``$LIRPA_SHARED``), as for the Rust tests."""

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def shared_dir() -> Path:
    env = os.environ.get("LIRPA_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def reference_cases(*subs):
    """Every case folder under ``reference/<sub>``, sorted."""
    root = shared_dir() / "reference"
    dirs = []
    for sub in subs:
        d = root / sub
        assert d.is_dir(), f"missing reference folder {d}"
        dirs += sorted(p for p in d.iterdir() if (p / "case.json").exists())
    return dirs


def load_case(d: Path):
    with open(d / "case.json") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def shared():
    return shared_dir()


@pytest.fixture(scope="session")
def repo():
    return REPO
