"""Resume and skip (sweeper.tracking.resume, .liveness): relaunches reuse FINISHED configs, orphaned RUNNING runs become KILLED.

Real components throughout: the CLI in a subprocess for sweeps, ``train_and_track`` in-process for single runs, temp
sqlite stores copied from one store migrated once per session (tests/sweeper/conftest.py), digits data.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from sweeper import names
from sweeper.reporting.selection import select_runs
from sweeper.tracking import liveness, resume

from ...handshake import wait_for
from ..sweeper_helpers import REPO, compose_cfg, run_cli, sqlite_uri

HOLD_HOOK = REPO / "tests" / "sweeper" / "hold_hook"
GRID = ["data=digits", "trainer.epochs=2", "model.width=4,8,16"]
EXPERIMENT = "mlp-sweeps"


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, migrated_db) -> Path:
    """A store holding one finished 3-job sweep of GRID (widths 4, 8, 16)."""
    root = tmp_path_factory.mktemp("finished_sweep")
    shutil.copy(migrated_db, root / "mlflow.db")
    proc = run_cli(["-m", *GRID, f"tracking.uri={sqlite_uri(root / 'mlflow.db')}"], root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "mlflow.db"


def copy_store(db: Path, tmp_path: Path) -> tuple[str, MlflowClient]:
    shutil.copy(db, tmp_path / "mlflow.db")
    uri = sqlite_uri(tmp_path / "mlflow.db")
    return uri, MlflowClient(uri)


def all_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return [] if experiment is None else client.search_runs([experiment.experiment_id], max_results=1000)


def children(client: MlflowClient) -> list:
    return [r for r in all_runs(client) if names.CONFIG_HASH in r.data.tags]


def parents(client: MlflowClient) -> list:
    return [r for r in all_runs(client) if r.data.tags.get(names.ROLE) == "sweep_parent"]


def by_width(runs) -> dict[str, list]:
    out: dict[str, list] = {}
    for run in runs:
        out.setdefault(run.data.params["model.width"], []).append(run)
    return out


def single_run(overrides, uri, tmp_path, monkeypatch) -> float:
    """One job in-process, as `mlp-sweep <overrides>` would run it (no Hydra runtime: a single run)."""
    from sweeper.lifecycle import train_and_track

    monkeypatch.setenv("MLP_SWEEPS_OUTPUTS", str(tmp_path / "outputs"))
    return train_and_track(compose_cfg([*overrides, f"tracking.uri={uri}"]))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid names no process any more
    return proc.pid


# ------------------------------------------------------------------------------------------------------- skip/resume

def test_relaunching_the_same_sweep_skips_every_job_and_links_the_runs(tmp_path, finished_sweep):
    uri, client = copy_store(finished_sweep, tmp_path)
    before = {r.info.run_id: r for r in children(client)}
    assert len(before) == 3 and all(r.info.status == "FINISHED" for r in before.values())

    proc = run_cli(["-m", *GRID, f"tracking.uri={uri}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    after = children(client)
    assert {r.info.run_id for r in after} == set(before)  # no new child run
    log_text = proc.stdout + proc.stderr
    for run_id, run in before.items():
        (line,) = [ln for ln in log_text.splitlines() if f"run id {run_id}" in ln]
        assert "skipped" in line and f"config_hash {run.data.tags[names.CONFIG_HASH][:12]}" in line
        assert f"best val loss {run.data.metrics[names.BEST_VAL_LOSS]:.4f}" in line
    # nothing was trained: no new, empty parent is left among the experiment's runs (README, "Resume"), and the log
    # names the runs' earlier parent; the relaunch's own parent, deleted, still lists them with a summary row each
    (first_parent,) = parents(client)
    assert "nothing was trained" in log_text and first_parent.info.run_id in log_text.split("nothing was trained")[1]
    experiment_id = first_parent.info.experiment_id
    (new_parent,) = client.search_runs([experiment_id], f"tags.`{names.ROLE}` = 'sweep_parent'",
                                       run_view_type=ViewType.DELETED_ONLY)
    assert new_parent.info.status == "FINISHED"
    assert new_parent.data.tags[names.SWEEP_CHILDREN] == "3" and new_parent.data.tags[names.SWEEP_CHILDREN_REUSED] == "3"
    assert new_parent.data.tags[names.BEST_CHILD_RUN_ID] in before
    link = names.sweep_link_tag(new_parent.data.tags[names.SWEEP_ID])
    assert {r.data.tags.get(link) for r in after} == {new_parent.info.run_id}

    # what a report of the new sweep covers: the same reused runs
    for selector in ({names.SWEEP_ID: new_parent.data.tags[names.SWEEP_ID]}, {"parent_run_id": new_parent.info.run_id}):
        assert {r.info.run_id for r in select_runs(client, **selector)[0]} == set(before)


def test_an_overlapping_grid_runs_only_the_new_points(tmp_path, finished_sweep):
    uri, client = copy_store(finished_sweep, tmp_path)
    old = {r.info.run_id for r in children(client)}

    proc = run_cli(["-m", "data=digits", "trainer.epochs=2", "model.width=8,16,32", f"tracking.uri={uri}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    runs = by_width(children(client))
    assert sorted(runs, key=int) == ["4", "8", "16", "32"] and all(len(v) == 1 for v in runs.values())
    (new,) = runs["32"]
    assert new.info.run_id not in old and new.info.status == "FINISHED"
    assert (proc.stdout + proc.stderr).count(": skipped, config_hash") == 2
    new_parent = max(parents(client), key=lambda r: r.info.start_time)
    assert new_parent.data.tags[names.SWEEP_CHILDREN] == "3" and new_parent.data.tags[names.SWEEP_CHILDREN_REUSED] == "2"


def test_a_single_run_skips_a_finished_config_unless_forced(tmp_path, finished_sweep, monkeypatch, caplog):
    uri, client = copy_store(finished_sweep, tmp_path)
    (existing,) = by_width(children(client))["8"]
    point = ["data=digits", "trainer.epochs=2", "model.width=8"]

    with caplog.at_level(logging.INFO, logger="sweeper"):
        objective = single_run(point, uri, tmp_path, monkeypatch)
    assert objective == existing.data.metrics[names.BEST_VAL_LOSS]
    assert len(children(client)) == 3
    assert f"run id {existing.info.run_id}" in caplog.text

    objective = single_run([*point, "tracking.skip_finished=false"], uri, tmp_path, monkeypatch)
    reruns = by_width(children(client))["8"]
    assert len(reruns) == 2 and all(r.info.status == "FINISHED" for r in reruns)
    assert len({r.data.tags[names.CONFIG_HASH] for r in reruns}) == 1  # tracking.* is not part of the hash
    assert objective == existing.data.metrics[names.BEST_VAL_LOSS]  # same config and seed: the same result


def test_a_failed_run_is_rerun(tmp_path, finished_sweep, monkeypatch):
    uri, client = copy_store(finished_sweep, tmp_path)
    (failed,) = by_width(children(client))["16"]
    client.set_terminated(failed.info.run_id, "FAILED")

    single_run(["data=digits", "trainer.epochs=2", "model.width=16"], uri, tmp_path, monkeypatch)

    runs = by_width(children(client))["16"]
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    assert len({r.data.tags[names.CONFIG_HASH] for r in runs}) == 1


def test_http_links_point_at_the_run_page():
    from types import SimpleNamespace

    run = SimpleNamespace(info=SimpleNamespace(experiment_id="3", run_id="abc"))
    assert resume.run_link("http://u:pw@host:5000/", run) == "http://***@host:5000/#/experiments/3/runs/abc"
    assert resume.run_link("sqlite:////tmp/x.db", run) == "run id abc"


# ------------------------------------------------------------------------------------------------- orphaned runs

def test_a_launch_kills_orphaned_running_runs_and_leaves_live_ones(tmp_path, migrated_db, monkeypatch):
    from mlflow.entities import Metric

    from sweeper.tracking.store import open_store

    uri, client = copy_store(migrated_db, tmp_path)
    store_client, _, experiment_id = open_store(compose_cfg([f"tracking.uri={uri}"]).tracking)
    assert type(store_client).__name__ == "RetryingClient"  # sqlite writers retry "database is locked"
    host, now = socket.gethostname(), time.time()

    def running(name, **owner):
        tags = {names.HOST: host, names.HEARTBEAT: str(int(now - 60))}
        tags.update({k: v for k, v in owner.items() if v is not None})
        return client.create_run(experiment_id, run_name=name, tags=tags, start_time=int(now - 120) * 1000).info.run_id

    dead = running("dead", **{names.PID: str(dead_pid())})
    live = running("live", **{names.PID: str(os.getpid()),
                              names.PID_START: liveness.process_start_time(os.getpid())})
    recycled = running("recycled", **{names.PID: str(os.getpid()), names.PID_START: "1"})
    remote_fresh = running("remote fresh", **{names.HOST: "elsewhere", names.PID: "1"})
    remote_stale = running("remote stale", **{names.HOST: "elsewhere", names.PID: "1",
                                              names.HEARTBEAT: str(int(now - 2 * 3600))})
    untagged = client.create_run(experiment_id, run_name="untagged").info.run_id
    client.log_batch(dead, metrics=[Metric(names.TRAIN_LOSS, 2.0 - 0.1 * s, int(now * 1000), s) for s in range(7)])

    single_run(["data=digits", "trainer.epochs=1"], uri, tmp_path, monkeypatch)

    status = {r.info.run_name: r for r in all_runs(client)}
    assert {name: r.info.status for name, r in status.items()} == {
        "dead": "KILLED", "recycled": "KILLED", "remote stale": "KILLED",
        "live": "RUNNING", "remote fresh": "RUNNING", "untagged": "RUNNING",
        "default": "FINISHED",
    }
    for name in ("dead", "recycled", "remote stale"):
        assert "owner process" in status[name].data.tags[names.KILLED_REASON]
    assert "is gone" in status["dead"].data.tags[names.KILLED_REASON]
    assert "no heartbeat for 120 min" in status["remote stale"].data.tags[names.KILLED_REASON]
    # its partial metrics stay, and it ends at its last heartbeat, not at the launch that found it
    assert [m.value for m in client.get_metric_history(dead, names.TRAIN_LOSS)] == pytest.approx(
        [2.0 - 0.1 * s for s in range(7)])
    assert status["dead"].info.end_time == int(now - 60) * 1000
    # the new run names its owner: this process
    new = status["default"].data.tags
    assert (new[names.HOST], new[names.PID]) == (host, str(os.getpid()))
    assert {live, remote_fresh, untagged} <= {r.info.run_id for r in all_runs(client) if r.info.status == "RUNNING"}
    assert {dead, recycled, remote_stale}.isdisjoint(r.info.run_id for r in all_runs(client)
                                                     if r.info.status == "RUNNING")


@pytest.mark.parametrize("path", ["bulk", "log_batch"])
def test_the_heartbeat_rides_along_with_metric_batches(tmp_path, migrated_db, path):
    from sweeper.tracking.run import RunTracker
    from sweeper.tracking.store import open_store

    uri, _ = copy_store(migrated_db, tmp_path)
    client, _, experiment_id = open_store(compose_cfg([f"tracking.uri={uri}"]).tracking)
    tracker = RunTracker.start(client, experiment_id, "beat", {names.HEARTBEAT: "0"})
    assert tracker.bulk_writer is not None  # sqlite: the bulk path unless it is switched off below
    if path == "log_batch":
        tracker.bulk_writer = None
    calls = []
    log_batch = client.log_batch
    client.log_batch = lambda *a, **k: (calls.append(k), log_batch(*a, **k))[1]

    tracker.log_metrics([(names.TRAIN_LOSS, 1.0, 0)])  # a fresh tracker's heartbeat is not due yet
    assert client.get_run(tracker.run_id).data.tags[names.HEARTBEAT] == "0"
    tracker._heartbeat.last -= liveness.HEARTBEAT_SECONDS
    before = int(time.time())
    tracker.log_metrics([(names.TRAIN_LOSS, 0.5, s) for s in range(1, 1502)])  # due now: written with this flush
    after = int(time.time())
    beat = int(client.get_run(tracker.run_id).data.tags[names.HEARTBEAT])
    assert before <= beat <= after  # written by this flush
    if path == "log_batch":  # 3 metric batches; the first of the due flush carries the tag, no extra call
        assert [len(k.get("tags") or []) for k in calls] == [0, 1, 0]
    else:  # metrics as bulk inserts; the tag alone in one small log_batch, only when due
        assert [(len(k.get("tags") or []), len(k.get("metrics") or [])) for k in calls] == [(1, 0)]
    tracker.log_metrics([(names.TRAIN_LOSS, 0.25, 1502)])  # due again only after another HEARTBEAT_SECONDS
    assert not (calls[-1].get("tags") if path == "log_batch" else len(calls) > 1)
    assert len(client.get_metric_history(tracker.run_id, names.TRAIN_LOSS)) == 1503


@pytest.mark.soak
def test_process_alive_rejects_dead_recycled_and_zombie_pids():
    assert liveness.process_alive(os.getpid(), liveness.process_start_time(os.getpid()))
    assert not liveness.process_alive(dead_pid())
    assert not liveness.process_alive(os.getpid(), start_time="1")
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: liveness._is_zombie(zombie.pid), "exit of the child (a zombie until reaped)", poll=0.05)
    assert not liveness.process_alive(zombie.pid)
    zombie.wait()


# -------------------------------------------------------------------------------------------------------- dry run

def test_a_dry_run_prints_the_grid_and_creates_no_run_and_no_store(tmp_path):
    db = tmp_path / "mlflow.db"
    proc = run_cli(["-m", "+sweep=task4_width", "hydra/launcher=dryrun", f"tracking.uri={sqlite_uri(db)}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line[:1].isdigit()]
    assert [(r[0], r[1], r[-3]) for r in rows] == [
        ("0", "experiment=task4a", "25,440"), ("1", "experiment=task3c", "50,880"), ("2", "experiment=task4b", "101,760")]
    assert not db.exists() and not (tmp_path / "mlartifacts").exists()
    assert not list(tmp_path.glob("**/mlflow.db")) and not list(tmp_path.glob("**/mlflow_parent.json"))


# ------------------------------------------------------------------------------------------ resume after a real kill

@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.soak
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
                         ids=["serial", "joblib-2-workers"])
def test_resume_after_a_real_kill(tmp_path, migrated_db, launcher):
    """kill -9 a sweep (its whole process group, workers included) after a job FINISHED while another one is logging,
    relaunch it: one FINISHED run per grid point, the killed runs KILLED with their metrics, the store intact.

    In the first launch the jobs of widths 16 and 32 stop for good once their first train/loss points are in the store
    (tests/sweeper/hold_hook, MLP_SWEEPS_HOLD_WIDTHS): the kill cannot come too late, after the sweep has finished."""
    uri, client = copy_store(migrated_db, tmp_path)
    grid = ["-m", "data=digits", "trainer.epochs=45", "trainer.early_stopping.enabled=false", "model.width=8,16,32",
            f"tracking.uri={uri}", *launcher]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env.update(MLP_SWEEPS_OUTPUTS=str(tmp_path / "outputs"), PYTHONPATH=str(HOLD_HOOK), MLP_SWEEPS_HOLD_WIDTHS="16,32")

    def finished_and_training():
        runs = children(client)
        finished = [r for r in runs if r.info.status == "FINISHED"]
        training = [r for r in runs if r.info.status == "RUNNING" and "train/loss" in r.data.metrics]
        return (finished, training) if finished and training else None

    with (tmp_path / "first.log").open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sweeper", *grid], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        finished, training = wait_for(finished_and_training, "FINISHED job and a second one logging", proc=proc)
    except AssertionError as exc:
        pytest.fail(f"{exc}:\n" + (tmp_path / "first.log").read_text()[-3000:])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first_done = finished[0]
    killed_steps = {r.info.run_id: len(client.get_metric_history(r.info.run_id, names.TRAIN_LOSS)) for r in training}

    second = run_cli(grid, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]

    runs = children(client)
    finished_by_hash: dict[str, list] = {}
    for run in runs:
        if run.info.status == "FINISHED":
            finished_by_hash.setdefault(run.data.tags[names.CONFIG_HASH], []).append(run.info.run_id)
    assert len(finished_by_hash) == 3 and all(len(ids) == 1 for ids in finished_by_hash.values())
    assert first_done.info.run_id in sum(finished_by_hash.values(), [])  # reused, not rerun
    assert f"run id {first_done.info.run_id}" in second.stdout + second.stderr
    statuses = sorted(r.info.status for r in runs)
    assert statuses.count("FINISHED") == 3 and set(statuses) <= {"FINISHED", "KILLED"}
    for run_id, steps in killed_steps.items():
        killed_now = client.get_run(run_id)
        assert killed_now.info.status == "KILLED" and "is gone" in killed_now.data.tags[names.KILLED_REASON]
        assert len(client.get_metric_history(run_id, names.TRAIN_LOSS)) == steps > 0
    first_parent, second_parent = sorted(parents(client), key=lambda r: r.info.start_time)
    assert (first_parent.info.status, second_parent.info.status) == ("KILLED", "FINISHED")
    assert second_parent.data.tags[names.SWEEP_CHILDREN] == "3"
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.integration
def test_runs_logged_by_release_0_1_0_are_still_reused(tmp_path):
    """A store written by the previous release (tests/fixtures/store_v0.1.0.db.gz: two digits sweeps and a single
    momentum run, with the optimizer label still in their hashes): relaunching its configs trains nothing."""
    import gzip

    db = tmp_path / "mlflow.db"
    db.write_bytes(gzip.decompress((Path(__file__).parents[2] / "fixtures" / "store_v0.1.0.db.gz").read_bytes()))
    uri = sqlite_uri(db)
    client = MlflowClient(uri)
    trained_before = {r.info.run_id for r in all_runs(client) if names.CONFIG_HASH in r.data.tags}
    assert len(trained_before) == 4

    proc = run_cli(["-m", "data=digits", "trainer.epochs=1", "model.width=16,48", f"tracking.uri={uri}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count(": skipped, config_hash") == 2
    proc = run_cli(["data=digits", "trainer.epochs=1", "optimizer=momentum", f"tracking.uri={uri}"], tmp_path)
    assert proc.returncode == 0 and ": skipped, config_hash" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert {r.info.run_id for r in all_runs(client) if names.CONFIG_HASH in r.data.tags} == trained_before
