"""Claims (sweeper.tracking.claims): concurrent launches on one store train each config once.

The protocol is tested in-process against a real sqlite store with real owner processes (a live child, a killed one),
then end to end: two overlapping sweeps started together, on a sqlite file and through a real ``mlflow server``, meeting
at each shared config (tests/sweeper/barrier_hook) so that both decide at the same moment.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeper import names
from sweeper.tracking import claims
from sweeper.tracking.liveness import process_start_time

from ...servers import LocalServer
from ..sweeper_helpers import REPO, sqlite_uri

BARRIER_HOOK = REPO / "tests" / "sweeper" / "barrier_hook"
HASH = "c" * 64


@pytest.fixture
def store(tmp_path, migrated_db):
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    client = MlflowClient(sqlite_uri(tmp_path / "mlflow.db"))
    return client, client.create_experiment("mlp-sweeps", artifact_location=(tmp_path / "arts").as_uri())


@pytest.fixture
def owner():
    """A live process on this host that owns a claim (the test's own pid would count as a stale claim of its own)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def owner_tags_of(pid: int) -> dict[str, str]:
    tags = {names.HOST: socket.gethostname(), names.PID: str(pid), names.HEARTBEAT: "9999999999"}
    start = process_start_time(pid)
    if start is not None:
        tags[names.PID_START] = start
    return tags


def holder_claim(client, experiment_id, pid: int, ticket: str = "1") -> str:
    tags = {names.CONFIG_HASH: HASH, names.CLAIM_TICKET: ticket, **owner_tags_of(pid)}
    return client.create_run(experiment_id, run_name="holder", tags=tags).info.run_id


def acquire(client, experiment_id, sleep):
    from sweeper.tracking.liveness import owner_tags

    return claims.acquire(client, experiment_id, "job", {names.CONFIG_HASH: HASH, **owner_tags()}, [HASH],
                          poll=0.0, sleep=sleep)


def no_sleep(seconds):
    raise AssertionError("acquire waited although nothing held the config")


# ------------------------------------------------------------------------------------------------------ the protocol

def test_a_free_config_is_claimed_at_once_with_the_first_ticket(store):
    client, experiment_id = store
    claim = acquire(client, experiment_id, no_sleep)
    run = client.get_run(claim.run_id)
    assert (run.info.status, run.data.tags[names.CLAIM_TICKET], claim.reused) == ("RUNNING", "1", None)


def test_a_live_holder_is_waited_for_and_its_finished_run_reused(store, owner, caplog):
    client, experiment_id = store
    holder = holder_claim(client, experiment_id, owner.pid)
    waits = []

    def holder_finishes(seconds):
        waits.append(seconds)
        client.set_terminated(holder, "FINISHED")

    with caplog.at_level("INFO", logger="sweeper.tracking.claims"):
        claim = acquire(client, experiment_id, holder_finishes)
    assert len(waits) == 1
    assert claim.run_id is None and claim.reused.info.run_id == holder and claim.waited_for.info.run_id == holder
    assert "is running elsewhere as run 'holder'" in caplog.text and f"pid {owner.pid}" in caplog.text
    # the waiting job's claim is withdrawn: KILLED, deleted, out of every search
    runs = client.search_runs([experiment_id])
    assert [r.info.run_id for r in runs] == [holder]


def test_a_later_claim_waits_whatever_its_run_id(store, owner):
    """The holder's ticket is smaller: it keeps the config even though run ids order the other way round."""
    client, experiment_id = store
    holder = holder_claim(client, experiment_id, owner.pid, ticket="7")
    seen = []

    def look(seconds):
        mine = [r for r in client.search_runs([experiment_id]) if r.info.run_id != holder]
        seen.append(mine[0].data.tags[names.CLAIM_TICKET])
        client.set_terminated(holder, "FAILED")  # the holder failed: the next in line trains

    claim = acquire(client, experiment_id, look)
    assert seen == ["8"] and claim.run_id is not None and claim.reused is None


def test_a_pending_claim_is_waited_for(store, owner):
    client, experiment_id = store
    pending = holder_claim(client, experiment_id, owner.pid, ticket=names.CLAIM_PENDING)
    calls = []

    def pending_gets_a_larger_ticket(seconds):
        calls.append(seconds)
        claims.set_tags(client, pending, {names.CLAIM_TICKET: "99"})

    claim = acquire(client, experiment_id, pending_gets_a_larger_ticket)
    assert len(calls) == 1 and claim.run_id is not None


@pytest.mark.soak
def test_a_dead_owners_claim_is_taken_over(store, owner):
    """The holder's owner is killed while this job waits: its claim becomes KILLED and this job trains."""
    client, experiment_id = store
    holder = holder_claim(client, experiment_id, owner.pid)

    def owner_dies(seconds):
        owner.send_signal(signal.SIGKILL)
        owner.wait()

    claim = acquire(client, experiment_id, owner_dies)
    assert claim.run_id is not None and claim.waited_for.info.run_id == holder
    dead = client.get_run(holder)
    assert dead.info.status == "KILLED" and "is gone" in dead.data.tags[names.KILLED_REASON]


def test_an_interrupted_wait_withdraws_the_claim(store, owner):
    client, experiment_id = store
    holder_claim(client, experiment_id, owner.pid)

    def ctrl_c(seconds):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        acquire(client, experiment_id, ctrl_c)
    assert [r.info.run_name for r in client.search_runs([experiment_id])] == ["holder"]


# ------------------------------------------------------------------------------------------------ two sweeps at once

GRID_A = "model.width=4,8,16"
GRID_B = "model.width=8,16,32"


def two_sweeps(tmp_path: Path, uri: str) -> list[str]:
    """Start sweeps A and B together on ``uri``; they meet at widths 8 and 16. Returns their outputs."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = []
    for me, grid in (("a", GRID_A), ("b", GRID_B)):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_", "MLP_SWEEPS_"))}
        env.update(MLP_SWEEPS_OUTPUTS=str(tmp_path / f"outputs-{me}"), PYTHONPATH=str(BARRIER_HOOK),
                   MLP_SWEEPS_BARRIER_DIR=str(barrier), MLP_SWEEPS_BARRIER_ME=me, MLP_SWEEPS_BARRIER_WIDTHS="8,16")
        log = (tmp_path / f"{me}.log").open("w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sweeper", "-m", "data=digits", "trainer.epochs=3", grid, f"tracking.uri={uri}"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    try:
        for proc in procs:
            proc.wait(timeout=600)  # bounds a hang only
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    outputs = [(tmp_path / f"{me}.log").read_text() for me in "ab"]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
    return outputs


def assert_each_config_finished_once(client: MlflowClient, outputs: list[str]) -> None:
    experiment = client.get_experiment_by_name("mlp-sweeps")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    children = [r for r in runs if names.CONFIG_HASH in r.data.tags]
    assert claims.duplicates(children) == {}
    finished = {r.data.params["model.width"]: r for r in children if r.info.status == "FINISHED"}
    assert sorted(finished, key=int) == ["4", "8", "16", "32"]
    assert all(r.info.status == "FINISHED" for r in children), [(r.info.run_name, r.info.status) for r in children]
    text = "\n".join(outputs)
    assert text.count("FINISHED elsewhere while this job waited") == 2, text[-4000:]
    # both sweeps' summaries cover their three configs: the waiting sweep's through the runs it was linked to
    parents = [r for r in runs if r.data.tags.get(names.ROLE) == names.ROLE_SWEEP_PARENT]
    assert sorted(p.data.tags[names.SWEEP_CHILDREN] for p in parents) == ["3", "3"]


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.integration
def test_two_overlapping_sweeps_on_one_sqlite_store_train_each_config_once(tmp_path, migrated_db):
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    uri = sqlite_uri(tmp_path / "mlflow.db")
    outputs = two_sweeps(tmp_path, uri)
    assert_each_config_finished_once(MlflowClient(uri), outputs)


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.integration
def test_two_overlapping_sweeps_through_one_mlflow_server_train_each_config_once(tmp_path, migrated_db):
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    with LocalServer(sqlite_uri(tmp_path / "mlflow.db"), artifacts_destination=str(tmp_path / "arts"),
                     log_path=tmp_path / "server.log") as server:
        outputs = two_sweeps(tmp_path, server.uri)
        assert_each_config_finished_once(MlflowClient(server.uri), outputs)
