"""Fixtures of the sweeper tests (helpers live in sweeper_helpers.py)."""
import pytest

from .sweeper_helpers import sqlite_uri


@pytest.fixture
def store(tmp_path):
    """A fresh sqlite tracking URI in tmp_path (created on first use)."""
    return sqlite_uri(tmp_path / "mlflow.db")
