"""Helpers for the sweeper tests: compose configs with Hydra's compose API, run the real CLI in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import sweeper.app  # noqa: F401  (registers the schema and the outputs resolver)

from ..handshake import HANG

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"


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
