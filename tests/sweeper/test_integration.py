"""Integration: a real `mlflow server` on 127.0.0.1, and a course preset on real MNIST."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sweeper import names

from ..handshake import HANG
from ..servers import LocalServer
from .sweeper_helpers import ARTIFACTS, run_cli, runs_of, sqlite_uri


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` as `make ui` starts it (tests/servers.py: its own process group, without MLflow's GenAI job
    runner, ready once GET /health answers, the group stopped after); the wait only bounds a hang."""
    with LocalServer(sqlite_uri(tmp_path / "server.db"), artifacts_destination=str(tmp_path / "server-artifacts"),
                     startup_timeout=HANG, log_path=tmp_path / "server.log") as server:
        yield server.uri


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
    (parent,) = [r for r in runs if names.PARENT_RUN_ID not in r.data.tags]
    children = [r for r in runs if names.PARENT_RUN_ID in r.data.tags]
    assert all(c.data.tags[names.PARENT_RUN_ID] == parent.info.run_id for c in children)
    for child in children:
        assert child.info.status == "FINISHED"
        assert {a.path for a in client.list_artifacts(child.info.run_id)} == ARTIFACTS
        assert len(client.get_metric_history(child.info.run_id, names.TRAIN_LOSS)) == child.data.metrics["steps"]
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
    assert len(client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)) == 625
    assert [m.step for m in client.get_metric_history(run.info.run_id, names.VAL_ACCURACY)] == [0, 125, 250, 375, 500]
    assert run.data.params["data.split"] == "assignment"
    assert run.data.metrics[names.NUM_PARAMETERS] == 785 * 64 + 64 * 10  # bias trick: 785 inputs, no later biases
    assert run.inputs.dataset_inputs[0].dataset.name == "mnist-assignment"
    assert run.data.metrics[names.BEST_VAL_ACCURACY] > 0.5  # far above chance (0.1) after one epoch


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.soak
def test_joblib_workers_share_the_parent_and_split_the_blas_threads(tmp_path, store):
    proc = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "data=digits", "trainer.epochs=1",
                    "model.width=4,8", f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    client, runs = runs_of(store)
    (parent,) = [r for r in runs if names.PARENT_RUN_ID not in r.data.tags]
    children = [r for r in runs if names.PARENT_RUN_ID in r.data.tags]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags[names.PARENT_RUN_ID] for c in children} == {parent.info.run_id}
    cores = len(os.sched_getaffinity(0))
    expected = str(max(1, cores // min(2, cores)))  # workers x threads = cores
    assert {c.data.params[names.BLAS_THREADS_PARAM] for c in children} == {expected}
