"""A single run (no -m) says where its files are and how to open it in the MLflow UI."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from .sweeper_helpers import ARTIFACTS, run_cli, runs_of, sqlite_uri

pytestmark = pytest.mark.integration


def test_a_single_run_prints_its_dir_and_its_ui_link_and_counts_one_blas_thread(tmp_path):
    store = sqlite_uri(tmp_path / "mlflow.db")
    proc = run_cli(["data=digits", "trainer.epochs=1", "model.width=8", "trainer.blas_threads=1",
                    f"tracking.uri={store}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, runs = runs_of(store)
    (run,) = runs
    run_dir = re.search(r"^run dir: (.+)$", proc.stdout, re.M)
    assert run_dir and ARTIFACTS <= {p.name for p in Path(run_dir.group(1)).iterdir()}, proc.stdout
    assert f"mlflow ui --backend-store-uri {store} --port 5000" in proc.stdout, proc.stdout
    link = f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" \
           "?workflowType=machine_learning"
    assert link in proc.stdout, proc.stdout
    assert "600 parameters, 46 steps/epoch, sklearn:load_digits, 1 BLAS thread\n" in proc.stdout, proc.stdout[-2000:]
