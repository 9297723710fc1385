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


# requeue_if_preempted in a Slurm job of submitit, against a stand-in `scontrol` on PATH: it prints the lines of
# $SCONTROL_REPLIES in turn, one per call (an empty line: the call fails, as it does when slurmctld is busy).
FAKE_SCONTROL = """#!/bin/sh
count=$(cat "$SCONTROL_CALLS" 2>/dev/null || echo 0)
count=$((count + 1))
echo "$count" > "$SCONTROL_CALLS"
line=$(sed -n "${count}p" "$SCONTROL_REPLIES")
[ -n "$line" ] || { echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2; exit 1; }
echo "$line"
"""


@pytest.fixture
def slurm_job_interrupted(tmp_path, monkeypatch):
    """A submitit job process that got SIGTERM, with a stand-in scontrol; yields (replies file, handler calls)."""
    from sweeper import signals

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SCONTROL_CALLS", str(tmp_path / "calls"))
    monkeypatch.setenv("SCONTROL_REPLIES", str(tmp_path / "replies"))
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    monkeypatch.setattr(signals, "SCONTROL_BUDGET_SECONDS", 4.0)
    calls: list[int] = []
    monkeypatch.setattr(signals, "_received", [signal.SIGTERM])
    monkeypatch.setattr(signals, "_requeue_handler", [lambda signum, frame: calls.append(signum)])
    yield tmp_path / "replies", calls


def test_a_busy_slurmctld_is_asked_again_and_a_time_limit_then_ends_the_job_with_a_result(slurm_job_interrupted):
    from sweeper import signals

    replies, calls = slurm_job_interrupted
    replies.write_text("\n\nJobId=41 JobState=TIMEOUT Reason=TimeLimit Restarts=0\n")  # fails twice, then answers
    with pytest.raises(signals.SlurmJobEnded, match=r"Slurm job 41 ended without a requeue \(JobState=TIMEOUT"):
        signals.requeue_if_preempted()
    assert calls == [] and Path(os.environ["SCONTROL_CALLS"]).read_text().strip() == "3"


def test_a_job_slurm_cannot_describe_ends_with_a_result_instead_of_an_escaping_interrupt(slurm_job_interrupted):
    """Without a result file the launcher (no sacct) would wait for the job forever."""
    from sweeper import signals

    replies, calls = slurm_job_interrupted
    replies.write_text("")  # every call fails, through the whole budget
    with pytest.raises(signals.SlurmJobEnded, match=r"JobState=unknown"):
        signals.requeue_if_preempted()
    assert calls == [] and int(Path(os.environ["SCONTROL_CALLS"]).read_text()) >= 2


def test_a_running_job_is_requeued_by_submitit_and_one_slurm_requeued_is_left_to_its_next_attempt(
        slurm_job_interrupted):
    from sweeper import signals

    replies, calls = slurm_job_interrupted
    replies.write_text("JobId=41 JobState=RUNNING Restarts=0\n")
    signals.requeue_if_preempted()
    assert calls == [signal.SIGTERM]  # submitit's checkpoint-and-requeue handler, with the signal
    Path(os.environ["SCONTROL_CALLS"]).unlink()
    calls.clear()
    replies.write_text("JobId=41 JobState=PENDING Reason=BeginTime Restarts=1\n")  # `scontrol requeue` by someone
    signals.requeue_if_preempted()  # returns: the next attempt runs the config again
    assert calls == []
