"""A read-only command never creates or migrates a store: ``mlp-sweep-report`` on a missing, empty, foreign or
old-schema store, and ``mlp-sweep --help``, ``--cfg job``, ``--info`` and a dry run with the store named on the command line and
in ``MLFLOW_TRACKING_URI``. Each leaves the store's directory byte-identical (nothing created)."""
from __future__ import annotations

import gzip
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ..sweeper_helpers import REPO, sqlite_uri
from .test_store_setup import snapshot

FIXTURE = REPO / "tests" / "fixtures" / "store_v0.1.0.db.gz"
OLD_ALEMBIC_REVISION = "0584bdc529eb"  # an MLflow 2.x schema revision


def env_for(tmp_path: Path, uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_", "MLP_SWEEPS_"))}
    return {**env, "MLFLOW_TRACKING_URI": uri, "MLP_SWEEPS_OUTPUTS": str(tmp_path / "outputs")}


def report(tmp_path: Path, db: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweeper.reporting.cli", "--experiment", "mlp-sweeps",
                           "--tracking-uri", sqlite_uri(db), "--out", str(tmp_path / "report")], cwd=tmp_path,
                          env=env_for(tmp_path, sqlite_uri(db)), capture_output=True, text=True, timeout=600)


def old_schema_store(tmp_path: Path) -> Path:
    """The 0.1.0 fixture store, its schema revision set back as an older MLflow would have left it: MLflow refuses it
    until `mlflow db upgrade`; a report says so and never upgrades it itself."""
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    with gzip.open(FIXTURE) as src, db.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (OLD_ALEMBIC_REVISION,))
    conn.close()
    return db


def foreign_database(tmp_path: Path) -> Path:
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    return db


def empty_file(tmp_path: Path) -> Path:
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    db.touch()
    return db


def missing(tmp_path: Path) -> Path:
    (tmp_path / "store").mkdir()
    return tmp_path / "store" / "mlflow.db"


@pytest.mark.integration
@pytest.mark.parametrize("make, says", [
    (missing, "does not exist"),
    (empty_file, "is no MLflow store (an empty file)"),
    (foreign_database, "is no MLflow store (a database without MLflow's tables)"),
    (old_schema_store, "mlflow db upgrade"),
], ids=["missing", "empty-file", "foreign-database", "old-schema"])
def test_a_report_never_creates_or_migrates_a_store(tmp_path, make, says):
    db = make(tmp_path)
    before = snapshot(db.parent)
    proc = report(tmp_path, db)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert says in proc.stderr and sqlite_uri(db) in proc.stderr
    assert snapshot(db.parent) == before


@pytest.mark.integration
@pytest.mark.parametrize("overrides, flags", [
    ([], ["--help"]), ([], ["--cfg", "job"]), (["model.width=8"], ["--info"]),
    (["data=digits", "model.width=4,8", "hydra/launcher=dryrun"], ["-m"]),
], ids=["help", "cfg-job", "info", "dry-run"])
def test_mlp_sweep_without_training_never_touches_a_store(tmp_path, overrides, flags):
    store = tmp_path / "store"
    store.mkdir()
    env = env_for(tmp_path, sqlite_uri(store / "from-env.db"))
    proc = subprocess.run([sys.executable, "-m", "sweeper", *overrides, f"tracking.uri={sqlite_uri(store / 'mlflow.db')}",
                           *flags], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(store.iterdir()) == []
    assert not list(tmp_path.rglob("mlartifacts")) and not list(tmp_path.rglob("*.db"))
