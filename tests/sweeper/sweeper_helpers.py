"""Helpers for the sweeper tests: compose configs with Hydra's compose API, run the real CLI in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from sweeper.app import register

from ..handshake import HANG

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
ARTIFACTS = {"config.yaml", "curves.png", "history.csv", "model.npz"}  # what every trained run logs

register()  # the schema and the outputs resolver, as the entry point does before Hydra composes


def runs_of(store: str):
    """(client, every run of the experiment mlp-sweeps) of a store URI."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("mlp-sweeps")
    assert experiment is not None
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def compose_cfg(overrides=(), return_hydra_config=False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def run_cli(args, tmp_path: Path, timeout=HANG, env_extra=None) -> subprocess.CompletedProcess:
    """`python -m sweeper ARGS` with outputs under tmp_path; stderr is not a TTY so the progress bar stays quiet.

    The timeout only bounds a hang (tests/handshake.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env["MLP_SWEEPS_OUTPUTS"] = str(tmp_path / "outputs")
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "sweeper", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
