"""hydra/launcher=population with other launches and with signals, end to end with real processes on digits: two
populations that claim the same configs in opposite orders both end, each config trained once; an interrupt while a
population waits for a claim ends the members it already claimed KILLED; SIGTERM to a sweep with worker processes
does not wait out the launcher's grace; no more workers than populations; members count in the sweep's progress.

Processes meet through tests/sweeper/population_hook (files they create, never a guessed sleep)."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from sweeper import names
from sweeper.tracking import claims

from ...handshake import HANG, catches_sigint, default_sigint, store_count, wait_for
from ...reliability.helpers import cli_command, cli_env
from ..sweeper_helpers import REPO, runs_of, sqlite_uri

HOOK = REPO / "tests" / "sweeper" / "population_hook"
DIGITS = ["data=digits", "trainer.blas_threads=1", "hydra/launcher=population"]
RUNS_WITH_LOSSES = "SELECT COUNT(DISTINCT run_uuid) FROM metrics WHERE key = 'train/loss'"


def hooked_env(tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    env = cli_env(tmp_path / f"outputs-{name}", extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HOOK), os.environ.get("PYTHONPATH", "")) if p)
    return env


def start(tmp_path: Path, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    with (tmp_path / f"{name}.log").open("w") as log:
        return subprocess.Popen(cli_command(["-m", *args, f"hydra.sweep.dir={tmp_path / name}"]), cwd=tmp_path,
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=default_sigint)


def end(*procs: subprocess.Popen, timeout: float = HANG) -> None:
    """Wait for the processes (the timeout only bounds a hang) and kill what is left of them."""
    try:
        for proc in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(HANG + 60)
def test_two_populations_claiming_in_opposite_orders_both_end_and_train_each_config_once(tmp_path, migrated_db):
    """Each sweep has its first member's claim in line before either asks for its second (the hook): claimed in
    launch order, each held what the other waited for, forever."""
    (tmp_path / "mlflow.db").write_bytes(migrated_db.read_bytes())
    uri = sqlite_uri(tmp_path / "mlflow.db")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = []
    for me, other, lrs in (("a", "b", "0.1,0.2"), ("b", "a", "0.2,0.1")):
        env = hooked_env(tmp_path, me, MLP_SWEEPS_CLAIM_BARRIER_DIR=str(barrier), MLP_SWEEPS_CLAIM_BARRIER_ME=me,
                         MLP_SWEEPS_CLAIM_BARRIER_OTHER=other)
        procs.append(start(tmp_path, me, [*DIGITS, "hydra.launcher.n_workers=1", "trainer.epochs=2",
                                          f"optimizer.lr={lrs}", f"tracking.uri={uri}"], env))
    end(*procs)
    logs = [(tmp_path / f"{me}.log").read_text() for me in "ab"]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    assert all((barrier / f"{me}.between").exists() for me in "ab")  # both met between their claims
    client, runs = runs_of(uri)
    children = [r for r in runs if names.CONFIG_HASH in r.data.tags]
    assert claims.duplicates(children) == {}
    finished = sorted(r.data.params["optimizer.lr"] for r in children if r.info.status == "FINISHED")
    assert finished == ["0.1", "0.2"], [(r.info.run_name, r.info.status) for r in children]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.soak
def test_ctrl_c_while_a_population_waits_for_a_claim_ends_the_members_it_claimed_killed(tmp_path):
    """The population holds its first member's claim and waits before its second (the hook's other sweep never
    comes): Ctrl-C there."""
    db = tmp_path / "mlflow.db"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = hooked_env(tmp_path, "a", MLP_SWEEPS_CLAIM_BARRIER_DIR=str(barrier), MLP_SWEEPS_CLAIM_BARRIER_ME="a",
                     MLP_SWEEPS_CLAIM_BARRIER_OTHER="never")
    proc = start(tmp_path, "a", [*DIGITS, "hydra.launcher.n_workers=1", "trainer.epochs=2", "optimizer.lr=0.1,0.2",
                                 f"tracking.uri={sqlite_uri(db)}"], env)
    try:
        wait_for(lambda: (barrier / "a.between").exists(), "the population waiting for its second claim", proc=proc)
        assert catches_sigint(proc.pid), "the app does not handle SIGINT"
        proc.send_signal(signal.SIGINT)
    finally:
        end(proc)
    log = (tmp_path / "a.log").read_text()
    assert proc.returncode == 128 + signal.SIGINT, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    _, runs = runs_of(sqlite_uri(db))
    members = [r for r in runs if names.PARENT_RUN_ID in r.data.tags]
    assert len(members) == 1, [(r.info.run_name, r.info.status) for r in runs]  # the second never got its run
    (member,) = members
    assert member.info.status == "KILLED" and member.data.tags[names.ERROR].startswith("KeyboardInterrupt")
    assert member.data.tags[names.KILLED_REASON].startswith("interrupted by Ctrl-C")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.parametrize("to_group", [True, False], ids=["group", "launcher"])
def test_sigterm_to_a_population_sweep_with_workers_does_not_wait_out_the_grace(tmp_path, to_group):
    """Two workers train a population of two each; SIGTERM to the process group (Slurm, a terminal) or to the launcher
    alone (``kill <pid>``: it forwards it). The launcher's grace is set to an hour (the hook): a launcher that waited
    it out would hit the test's bound, which only bounds a hang; one that goes on once its workers have ended their
    runs exits in seconds."""
    db = tmp_path / "mlflow.db"
    env = hooked_env(tmp_path, "a", MLP_SWEEPS_WORKER_GRACE="3600")
    proc = start(tmp_path, "a", [*DIGITS, "hydra.launcher.n_workers=2", "trainer.epochs=100000",
                                 "trainer.early_stopping.enabled=false", "optimizer.lr=0.1,0.2,0.3,0.4",
                                 f"tracking.uri={sqlite_uri(db)}"], env)
    try:
        wait_for(lambda: store_count(db, RUNS_WITH_LOSSES) == 4, "train/loss rows of every member", proc=proc)
        if to_group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
    finally:
        end(proc, timeout=HANG / 2)  # far below the hour of grace, far above the seconds the exit takes
    log = (tmp_path / "a.log").read_text()
    assert proc.returncode == 128 + signal.SIGTERM, log[-3000:]
    _, runs = runs_of(sqlite_uri(db))
    members = [r for r in runs if names.PARENT_RUN_ID in r.data.tags]
    assert len(members) == 4 and all(r.info.status == "KILLED" for r in members), [
        (r.info.run_name, r.info.status) for r in members]
    assert all(r.data.tags[names.KILLED_REASON].startswith("interrupted by SIGTERM") for r in members)


@pytest.mark.integration
@pytest.mark.slow
def test_no_more_worker_processes_than_groups(tmp_path):
    """2 jobs, n_workers=4: 2 worker processes start (the hook marks each)."""
    marks = tmp_path / "workers"
    marks.mkdir()
    env = hooked_env(tmp_path, "a", MLP_SWEEPS_WORKER_MARKS=str(marks))
    proc = start(tmp_path, "a", [*DIGITS, "hydra.launcher.n_workers=4", "trainer.epochs=1", "optimizer.lr=0.1,0.2",
                                 f"tracking.uri={sqlite_uri(tmp_path / 'mlflow.db')}"], env)
    end(proc)
    log = (tmp_path / "a.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert log.count("solo of 1 job(s)") == 2, log[-3000:]
    assert len(list(marks.iterdir())) == 2


@pytest.mark.integration
@pytest.mark.slow
def test_members_count_in_the_sweep_progress(tmp_path):
    """A population of 2 and a relaunch that reuses both: one progress line per member."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    args = [*DIGITS, "hydra.launcher.n_workers=1", "trainer.epochs=1", "optimizer.lr=0.1,0.2", f"tracking.uri={uri}"]
    for name, lines in (("a", ["1/2 done, 0 reused, 0 failed", "2/2 done, 0 reused, 0 failed"]),
                        ("again", ["1/2 done, 1 reused, 0 failed", "2/2 done, 2 reused, 0 failed"])):
        proc = start(tmp_path, name, args, cli_env(tmp_path / f"outputs-{name}"))
        end(proc)
        log = (tmp_path / f"{name}.log").read_text()
        assert proc.returncode == 0, log[-3000:]
        progress = [line.split("sweep progress: ", 1)[1] for line in log.splitlines() if "sweep progress: " in line]
        assert [line[:len(lines[0])] for line in progress] == lines, log[-3000:]
    assert "population of 2 job(s)" in (tmp_path / "a.log").read_text()


def readme_population_commands() -> list[str]:
    """The commands of the README's population section."""
    section = (REPO / "README.md").read_text().split("## Population training", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if "hydra/launcher=population" in line]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("command", readme_population_commands())
def test_the_readme_population_examples_fuse_every_job(tmp_path, command):
    """Each command as written, on digits for one epoch: every job is a member of a population, none runs solo."""
    args = command.split()[1:]
    assert args[0] == "-m"
    proc = start(tmp_path, "a", [*args[1:], "data=digits", "trainer.epochs=1",
                                 f"tracking.uri={sqlite_uri(tmp_path / 'mlflow.db')}"], cli_env(tmp_path / "outputs"))
    end(proc)
    log = (tmp_path / "a.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert "population of " in log and "solo of " not in log, log[-3000:]
    _, runs = runs_of(sqlite_uri(tmp_path / "mlflow.db"))
    members = [r for r in runs if names.PARENT_RUN_ID in r.data.tags]
    assert members and all(r.data.tags[names.ENGINE].startswith("population(") for r in members)
    assert f"sweep progress: {len(members)}/{len(members)} done" in log
