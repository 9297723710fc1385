"""Helpers of the reliability tests: the real CLI in a subprocess, a pre-populated MLflow store and its snapshot."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from ..servers import free_port

from ..handshake import HANG

REPO = Path(__file__).resolve().parents[2]
REAL_MNIST_CACHE = Path.home() / ".cache" / "mlp-sweeps" / "mnist"
EXPERIMENT = "mlp-sweeps"


def cli_env(outputs: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without MLflow/Hydra settings, outputs under ``outputs``, no network data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_", "MLP_SWEEPS_"))}
    env["MLP_SWEEPS_OUTPUTS"] = str(outputs)
    env["MLP_SWEEPS_OFFLINE"] = "1"
    env.update(extra or {})
    return env


def cli_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "sweeper", *args]


def run_cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = HANG) -> subprocess.CompletedProcess:
    """`python -m sweeper ARGS`; stderr is a pipe, so the progress bar stays quiet. The timeout only bounds a hang."""
    return subprocess.run(cli_command(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def sqlite_uri(db: Path) -> str:
    return f"sqlite:///{db.resolve()}"


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    return free_port()


def make_store_with_one_finished_run(db: Path) -> str:
    """A sqlite store holding experiment ``mlp-sweeps`` with one FINISHED run (params, metrics, tags). Returns run id."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_uri(db))
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(db.parent / "mlartifacts").as_uri())
    run = client.create_run(experiment_id, run_name="earlier run", tags={"stop_reason": "max_epochs"})
    client.log_batch(
        run.info.run_id,
        metrics=[Metric("train/loss", 2.3 - 0.1 * s, 1_700_000_000_000 + s, s) for s in range(10)],
        params=[Param("optimizer.lr", "0.1"), Param("model.width", "64")],
        tags=[RunTag("experiment", "earlier")],
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def copy_store(template: Path, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    db = dest_dir / "mlflow.db"
    shutil.copyfile(template, db)
    return db


def store_dump(db: Path) -> list[str]:
    """Every row of every table of the sqlite store, as SQL (a read-only connection: the snapshot changes nothing)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return list(conn.iterdump())


def tree(path: Path) -> list[str]:
    """Relative paths of everything under ``path`` (empty if it does not exist)."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []
