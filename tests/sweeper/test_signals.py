"""SIGTERM (Slurm preemption and time-out, docker stop) ends a run like Ctrl-C: metrics flushed, run KILLED, a sweep's
parent KILLED with its summary, one line and exit code 143 instead of a silent death. Real CLI processes, real
sqlite stores; the tests act once the child has written its first metric rows (a row in the store is the handshake)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeper import names

from ..handshake import HANG, store_count, wait_for
from .sweeper_helpers import sqlite_uri

LONG_RUN = ["data=digits", "trainer.epochs=100000", "trainer.early_stopping.enabled=false"]


def start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env.update(MLP_SWEEPS_OUTPUTS=str(tmp_path / "outputs"), MLP_SWEEPS_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "sweeper", *args, f"tracking.uri={sqlite_uri(tmp_path / 'mlflow.db')}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for_metric_rows(db: Path, proc: subprocess.Popen) -> int:
    """Until the child's first metric flush is in the store; returns the number of rows seen then."""
    return wait_for(lambda: store_count(db, "SELECT COUNT(*) FROM metrics"), "metric rows from the child", proc=proc,
                    poll=0.2)


def terminate(proc: subprocess.Popen, group: bool) -> tuple[int, str]:
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=HANG)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, stderr


@pytest.mark.integration
@pytest.mark.soak
def test_sigterm_ends_a_single_run_killed_with_its_metrics(tmp_path):
    proc = start(LONG_RUN, tmp_path)
    rows_before = wait_for_metric_rows(tmp_path / "mlflow.db", proc)
    code, stderr = terminate(proc, group=False)
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    assert "interrupted by SIGTERM" in stderr and "Traceback" not in stderr, stderr[-3000:]
    client = MlflowClient(sqlite_uri(tmp_path / "mlflow.db"))
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert "KeyboardInterrupt: SIGTERM" in run.data.tags[names.ERROR]
    assert "interrupted by SIGTERM" in run.data.tags[names.KILLED_REASON]
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, names.TRAIN_LOSS))
    assert steps == list(range(len(steps)))  # every step up to the end, the buffered ones flushed at the signal
    total = sum(len(client.get_metric_history(run.info.run_id, key)) for key in names.CURVE_METRICS)
    assert total >= rows_before


@pytest.mark.integration
@pytest.mark.soak
def test_sigterm_to_a_sweeps_process_group_ends_job_and_parent_killed_with_the_summary(tmp_path):
    proc = start(["-m", *LONG_RUN, "model.width=8,16", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    wait_for_metric_rows(tmp_path / "mlflow.db", proc)
    code, stderr = terminate(proc, group=True)
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    client = MlflowClient(sqlite_uri(tmp_path / "mlflow.db"))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get(names.ROLE) == names.ROLE_SWEEP_PARENT]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(children) == 1  # the second job never started
    assert parents[0].info.status == "KILLED" and children[0].info.status == "KILLED"
    assert children[0].data.tags[names.PARENT_RUN_ID] == parents[0].info.run_id
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {"summary.md", "comparison.png"}
    assert (tmp_path / "sweep" / "summary.md").is_file()


def running_runs_with_metrics(db: Path) -> int:
    """How many runs have metric rows in the store and are still RUNNING."""
    return store_count(db, "SELECT COUNT(DISTINCT m.run_uuid) FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
                           "WHERE r.status = 'RUNNING'")


@pytest.mark.integration
@pytest.mark.soak
def test_sigterm_to_a_joblib_sweeps_process_group_ends_every_worker_run_killed(tmp_path):
    """Both joblib workers train when the signal comes: each run ends KILLED with its metrics and the signal named,
    the parent KILLED with its summary, and the launcher exits with one line. No "leaked semaphore" warning follows:
    the workers' progress bars lock with a thread lock, not a named semaphore that a killed worker cannot unlink
    (signals.thread_lock_for); communicate() reads stderr until the resource tracker, which prints that warning when
    it shuts down after the launcher, has closed it too."""
    db = tmp_path / "mlflow.db"
    proc = start(["-m", *LONG_RUN, "model.width=8,16", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                  f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    wait_for(lambda: running_runs_with_metrics(db) == 2, "metric rows from both workers", proc=proc, poll=0.2)
    code, stderr = terminate(proc, group=True)
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted by SIGTERM" in stderr, stderr[-3000:]
    assert "leaked semaphore" not in stderr and "resource_tracker" not in stderr, stderr[-3000:]
    client = MlflowClient(sqlite_uri(db))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get(names.ROLE) == names.ROLE_SWEEP_PARENT]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].info.status == "KILLED"
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {"summary.md", "comparison.png"}
    for child in children:
        assert child.info.status == "KILLED" and child.info.end_time is not None, child.data.tags
        assert "SIGTERM" in child.data.tags[names.KILLED_REASON]
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, names.TRAIN_LOSS))
        assert steps and steps == list(range(len(steps)))  # flushed up to the signal, no gap
