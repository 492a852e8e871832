"""Shared fixtures: the real data from ../shared/data (or $HPSEARCH_TEST_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("HPSEARCH_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder holding the course's euro/ CSVs and the faces/ images."""
    if not (SHARED_DATA / "euro" / "train.csv").is_file():
        raise RuntimeError(f"test data not found at {SHARED_DATA}; set HPSEARCH_TEST_DATA to the "
                           "folder holding euro/ and faces/")
    return SHARED_DATA


@pytest.fixture
def storage_url(tmp_path: Path) -> str:
    """A fresh SQLite storage file for one test."""
    return f"sqlite:///{tmp_path / 'studies.db'}"
