"""Integration: a real `mlflow server` on 127.0.0.1, and a course preset on real MNIST."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeper.store import free_port

from ..handshake import wait_for
from .sweeper_helpers import run_cli
from .test_tracking import ARTIFACTS, runs_of


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` in its own process group (it forks workers); waits for /health, kills the group after."""
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=10) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        try:
            wait_for(healthy, "200 from GET /health", proc=proc, poll=0.5)
        except AssertionError as exc:
            pytest.fail(f"mlflow server did not start ({exc}):\n" + (tmp_path / "server.log").read_text()[-3000:])
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=120)  # then SIGKILL: this limit only ends a slow stop
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.soak
def test_run_against_a_real_mlflow_server(tmp_path, mlflow_server):
    # credentials in the URI (sent as basic auth, ignored by this server) must never reach params, tags or artifacts
    with_credentials = mlflow_server.replace("http://", "http://alice:s3cret@")
    proc = run_cli(["-m", "data=digits", "trainer.epochs=1", "model.width=8,16", f"tracking.uri={with_credentials}",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    client, runs = runs_of(mlflow_server)
    assert len(runs) == 3
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    for child in children:
        assert child.info.status == "FINISHED"
        assert {a.path for a in client.list_artifacts(child.info.run_id)} == ARTIFACTS
        assert len(client.get_metric_history(child.info.run_id, "train/loss")) == child.data.metrics["steps"]
        assert child.data.params["tracking.uri"] == mlflow_server.replace("http://", "http://***@")
        local = Path(client.download_artifacts(child.info.run_id, "config.yaml", str(tmp_path / child.info.run_id)))
        recorded = local.read_text() + json.dumps(child.data.params) + json.dumps(child.data.tags)
        assert "s3cret" not in recorded
    assert "s3cret" not in json.dumps(parent.data.tags) + parent.info.run_name
    assert any((tmp_path / "server-artifacts").rglob("model.npz"))  # proxied to the server's artifact store


@pytest.mark.integration
@pytest.mark.slow
def test_course_preset_on_real_mnist_for_one_epoch(tmp_path, store):
    proc = run_cli(["experiment=task2c", "trainer.epochs=1", f"tracking.uri={store}",
                    f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    client, (run,) = runs_of(store)
    assert run.info.run_name == "task2c epochs=1"
    assert run.data.metrics["steps"] == 625  # 20,000 / 32, last partial batch dropped
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 625
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/accuracy")] == [0, 125, 250, 375, 500]
    assert run.data.params["data.split"] == "assignment"
    assert run.data.metrics["num_parameters"] == 785 * 64 + 64 * 10  # bias trick: 785 inputs, no later biases
    assert run.inputs.dataset_inputs[0].dataset.name == "mnist-assignment"
    assert run.data.metrics["best/val_accuracy"] > 0.5  # far above chance (0.1) after one epoch


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.soak
def test_joblib_workers_share_the_parent_and_split_the_blas_threads(tmp_path, store):
    proc = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "data=digits", "trainer.epochs=1",
                    "model.width=4,8", f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    client, runs = runs_of(store)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    cores = len(os.sched_getaffinity(0))
    expected = str(max(1, cores // min(2, cores)))  # workers x threads = cores
    assert {c.data.params["runtime.blas_threads"] for c in children} == {expected}
