"""The search sweeper against what goes wrong around it (real Hydra multirun, real sqlite store, real Optuna journal):
a launcher that cannot run a search, a second launch of a running study, a corrupt or torn journal, a storage path
under a regular file, and a pruner that would judge untrained trials."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sweeper import names

from ...handshake import HANG, wait_for
from ..sweeper_helpers import REPO, runs_of, sqlite_uri
from .test_search import TINY, search, study_in

RELEASE_HOOK = REPO / "tests" / "sweeper" / "release_hook"
SPACE = "optimizer.lr=tag(log, interval(0.01, 0.5))"


def one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr[-3000:]
    return lines[0]


def test_a_search_on_the_population_launcher_is_refused_in_one_line_before_anything_exists(tmp_path):
    """The fused pass neither reports to the trials nor returns each trial's objective: refused, not run wrongly."""
    proc = search(tmp_path, "pop", ["hydra/launcher=population", "hydra.sweeper.objective=best/val_accuracy",
                                    "hydra.sweeper.direction=maximize", *TINY, SPACE])
    line = one_error_line(proc)
    assert "hydra/launcher=population" in line and "joblib" in line
    assert not (tmp_path / "pop" / "mlflow.db").exists() and not (tmp_path / "pop" / "outputs").exists()


def test_a_corrupt_journal_is_refused_in_one_line_naming_it_before_the_parent_run_exists(tmp_path):
    journal = tmp_path / "c" / "study.journal"
    journal.parent.mkdir()
    garbage = b"\x00\x9c\xff not a record\n" * 3
    journal.write_bytes(garbage)
    proc = search(tmp_path, "c", [f"hydra.sweeper.storage={journal}", *TINY, SPACE])
    line = one_error_line(proc)
    assert str(journal) in line and "corrupt" in line
    assert not (tmp_path / "c" / "mlflow.db").exists() and journal.read_bytes() == garbage


def test_a_storage_path_under_a_regular_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "f").mkdir()
    blocker = tmp_path / "f" / "a_file"
    blocker.write_text("not a directory")
    proc = search(tmp_path, "f", [f"hydra.sweeper.storage={blocker / 'studies' / 'x.journal'}", *TINY, SPACE])
    line = one_error_line(proc)
    assert f"{blocker} is a regular file" in line
    assert not (tmp_path / "f" / "mlflow.db").exists() and blocker.read_text() == "not a directory"


@pytest.mark.integration
def test_a_torn_last_record_is_cut_off_with_a_backup_and_the_study_goes_on(tmp_path):
    """A launch killed mid-append leaves a record without its newline; the next launch keeps a backup, cuts it off,
    says so in one line and continues the study, which later launches can still read."""
    import optuna

    from sweeper.sweep.search import open_storage

    journal = tmp_path / "t" / "study.journal"
    journal.parent.mkdir()
    study = optuna.create_study(study_name="torn", storage=open_storage(str(journal)))
    study.tell(study.ask({"optimizer.lr": optuna.distributions.FloatDistribution(0.01, 0.5, log=True)}), 0.5)
    intact = journal.read_bytes()
    torn = intact + b'{"op_code":4,"worker_id":"killed","study_id":0,"da'
    journal.write_bytes(torn)
    proc = search(tmp_path, "t", [f"hydra.sweeper.storage={journal}", "hydra.sweeper.study_name=torn",
                                  "hydra.sweeper.n_trials=2", "tracking.enabled=false", *TINY, SPACE])
    assert proc.returncode == 0, proc.stderr[-3000:]
    [backup] = journal.parent.glob("study.journal.torn-*")
    assert backup.read_bytes() == torn and journal.read_bytes().startswith(intact)
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "record was torn" in line]
    assert len(said) == 1 and str(journal) in said[0] and str(backup) in said[0], said
    # a fresh reader (a later launch) sees the old trial and the new one
    again = optuna.load_study(study_name="torn", storage=open_storage(str(journal)))
    assert [t.state.name for t in again.trials] == ["COMPLETE", "COMPLETE"]


@pytest.mark.slow
@pytest.mark.integration
def test_a_second_launch_of_a_running_study_leaves_the_first_launchs_trials_alone(tmp_path):
    """The same command twice: the second launch starts while the first one's trial 0 trains (held there by
    tests/sweeper/release_hook until the second launch has asked its own trial). The first launch's live trial is not
    failed: both launches end cleanly, and no trial of the study is FAIL."""
    where = tmp_path / "s"
    where.mkdir()
    args = ["-m", "hydra/sweeper=random", "hydra.sweeper.n_trials=2", *TINY, SPACE,
            f"tracking.uri={sqlite_uri(where / 'mlflow.db')}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env["MLP_SWEEPS_OUTPUTS"] = str(where / "outputs")
    held_env = {**env, "MLP_SWEEPS_RELEASE": str(tmp_path / "release"),
                "PYTHONPATH": os.pathsep.join(p for p in (str(RELEASE_HOOK), env.get("PYTHONPATH")) if p)}
    logs = {name: (tmp_path / f"{name}.out").open("w") for name in ("first", "second")}
    first = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=where, env=held_env, stdout=logs["first"],
                             stderr=subprocess.PIPE, text=True)
    second = None
    try:
        wait_for(lambda: (tmp_path / "release.held").exists(), "the first launch's trial 0 to train", proc=first)
        second = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=where, env=env,
                                  stdout=logs["second"], stderr=subprocess.PIPE, text=True)
        wait_for(lambda: len(study_in(where / "outputs").trials) >= 2, "the second launch to ask a trial",
                 proc=second)
        (tmp_path / "release").touch()
        _, first_err = first.communicate(timeout=HANG)
        _, second_err = second.communicate(timeout=HANG)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert first.returncode == 0 and "Traceback" not in first_err, first_err[-3000:]
    assert second.returncode == 0, second_err[-3000:]
    study = study_in(where / "outputs")
    assert study.trials[0].state.name == "COMPLETE"
    assert "FAIL" not in [t.state.name for t in study.trials]
    _, runs = runs_of(sqlite_uri(where / "mlflow.db"))
    parents = [r for r in runs if r.data.tags.get(names.ROLE) == names.ROLE_SWEEP_PARENT]
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}


@pytest.mark.slow
@pytest.mark.integration
def test_the_default_warm_up_judges_no_trial_before_its_first_epoch_ended(tmp_path):
    """The median pruner with its defaults on digits (46 steps an epoch, a validation point every 9 steps from step
    0): trials are pruned, but none at a validation point of its first epoch, when it had barely trained."""
    proc = search(tmp_path, "w", ["hydra.sweeper.n_trials=4", "hydra.sweeper.pruner=median",
                                  "hydra.sweeper.pruner_startup_trials=1", "data=digits", "trainer.epochs=2",
                                  "trainer.blas_threads=1", "tracking.enabled=false",
                                  "optimizer.lr=tag(log, interval(0.0001, 1.0))"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    pruned = [t for t in study_in(tmp_path / "w" / "outputs").trials if t.state.name == "PRUNED"]
    assert pruned
    assert all(t.user_attrs[names.PRUNED_ATTR] >= 1500 // 32 for t in pruned), [t.user_attrs for t in pruned]
