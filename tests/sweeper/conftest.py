"""Fixtures of the sweeper tests (helpers live in sweeper_helpers.py)."""
from pathlib import Path

import pytest

from .sweeper_helpers import sqlite_uri


@pytest.fixture
def store(tmp_path):
    """A fresh sqlite tracking URI in tmp_path (created on first use)."""
    return sqlite_uri(tmp_path / "mlflow.db")


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """An empty, migrated sqlite store to copy (no experiment yet, so each copy gets its own artifact location):
    concurrent first launches would race to create its tables, and each migration costs ~7 s, so it is made once per
    session (per xdist worker). Tests copy it and never open it."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(sqlite_uri(path)).search_experiments()
    return path
