"""MLflow tracking end to end: real CLI subprocesses, a real sqlite store, read back with MlflowClient."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from mlp_core import MLP, ModelConfig, load_dataset, num_parameters
from sweeper.redact import mask_credentials
from sweeper.tracking.store import resolve_tracking_uri
from sweeper import names

from ...handshake import HANG
from ...servers import free_port
from ..sweeper_helpers import ARTIFACTS, compose_cfg, run_cli, runs_of

SUMMARY = {names.NUM_PARAMETERS, names.BEST_VAL_LOSS, names.BEST_VAL_ACCURACY, names.FINAL_VAL_ACCURACY, names.FINAL_VAL_LOSS, "epochs",
           names.TRAIN_SECONDS}


def check_run(client, run, tmp_path, epochs):
    """Histories, params, summary, tags, dataset input and artifacts of one finished digits run."""
    run_id = run.info.run_id
    data = load_dataset("digits")
    steps_per_epoch = len(data.train.y) // 32
    num_steps = int(run.data.metrics["steps"])
    assert num_steps == epochs * steps_per_epoch  # 3 digits epochs never early-stop
    train_loss = client.get_metric_history(run_id, names.TRAIN_LOSS)
    assert sorted(m.step for m in train_loss) == list(range(num_steps))
    val_every = steps_per_epoch // 5
    expected_val_steps = list(range(0, num_steps, val_every))
    for key in (names.VAL_LOSS, names.VAL_ACCURACY, names.TRAIN_ACCURACY):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == expected_val_steps, key

    params = run.data.params
    # the model's shape as trained: the effective list (the config's own hidden_sizes is null) and numbers
    assert params[names.HIDDEN_SIZES_PARAM] == params[names.EFFECTIVE_HIDDEN_SIZES_PARAM] == "[8, 8]"
    assert (params[names.WIDTH_PARAM], params[names.DEPTH_PARAM], params[names.NUM_HIDDEN_LAYERS_PARAM]) == ("8", "2", "2")
    assert params["optimizer.lr"] == "0.1" and params["data.name"] == "digits"
    expected_params = num_parameters(data.input_dim, ModelConfig(hidden_sizes=(8, 8)))
    assert int(params[names.NUM_PARAMETERS]) == expected_params == int(run.data.metrics[names.NUM_PARAMETERS])
    assert SUMMARY <= set(run.data.metrics)
    assert run.data.metrics["epochs"] == epochs
    tags = run.data.tags
    assert tags[names.STOP_REASON] == "max_epochs"
    assert re.fullmatch(r"[0-9a-f]{64}", tags[names.CONFIG_HASH])
    assert "model.depth=2" in tags[names.OVERRIDES]
    assert re.fullmatch(r"[0-9a-f]{40}", tags[names.GIT_COMMIT])
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "digits-default"
    assert dataset_input.dataset.digest == data.digest[:36]

    assert {a.path for a in client.list_artifacts(run_id)} == ARTIFACTS
    local = Path(client.download_artifacts(run_id, "", str(tmp_path / f"dl-{run_id}")))
    model = MLP.load(local / "model.npz")
    assert model.num_parameters == expected_params
    assert model.predict(data.val.x[:5]).shape == (5,)
    assert [w.shape for w in model.weights] == [(data.input_dim + 1, 8), (8, 8), (8, 10)]  # bias trick: +1 input
    loss, accuracy = model.evaluate(data.val.x, data.val.y)
    assert np.isfinite(loss) and accuracy > 0.1  # better than chance after 3 epochs
    rows = list(csv.DictReader(io.StringIO((local / "history.csv").read_text())))
    assert list(rows[0]) == ["step", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    assert len(rows) == num_steps
    assert [int(r["step"]) for r in rows if r["val_loss"]] == expected_val_steps
    stored = {m.step: m.value for m in train_loss}
    assert all(float(r["train_loss"]) == pytest.approx(stored[int(r["step"])], rel=1e-6) for r in rows)
    config = OmegaConf.load(local / "config.yaml")
    assert config.model.depth == 2 and config.data.name == "digits"
    assert (local / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
@pytest.mark.parametrize("background", ["false", "true"], ids=["inline-metrics", "background-metrics"])
def test_single_run_on_digits_logs_the_contract(tmp_path, store, background):
    run_dir = tmp_path / "run"
    proc = run_cli(["data=digits", "trainer.epochs=3", "model.width=8", "model.depth=2", f"tracking.uri={store}",
                    f"hydra.run.dir={run_dir}", f"tracking.background_metrics={background}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "step/s" not in proc.stderr and "%|" not in proc.stderr  # no progress bar when stderr is not a TTY
    client, runs = runs_of(store)
    assert len(runs) == 1
    (run,) = runs
    assert run.info.status == "FINISHED" and run.info.run_name == "default data=digits epochs=3 width=8 depth=2"
    assert names.PARENT_RUN_ID not in run.data.tags
    check_run(client, run, tmp_path, epochs=3)
    assert ARTIFACTS <= {p.name for p in run_dir.iterdir()}  # the job's output dir keeps a copy
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts next to the sqlite store, not in the cwd's ./mlruns
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.integration
def test_multirun_has_one_parent_and_children_carrying_its_tag(tmp_path, store):
    proc = run_cli(["-m", "data=digits", "trainer.epochs=1", "experiment=task3c", "model.width=4,8,16",
                    f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    client, runs = runs_of(store)
    parents = [r for r in runs if names.PARENT_RUN_ID not in r.data.tags]
    children = [r for r in runs if names.PARENT_RUN_ID in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "sweep data=digits trainer.epochs=1 experiment=task3c model.width=4,8,16"
    assert {c.data.tags[names.PARENT_RUN_ID] for c in children} == {parent.info.run_id}
    assert {c.data.tags[names.SWEEP_ID] for c in children} == {parent.data.tags[names.SWEEP_ID]}
    assert sorted(c.info.run_name for c in children) == [
        "width=16 task3c data=digits epochs=1", "width=4 task3c data=digits epochs=1",
        "width=8 task3c data=digits epochs=1"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags[names.CONFIG_HASH] for c in children}) == 3
    assert len({c.data.tags[names.CONFIG_HASH_NOSEED] for c in children}) == 3
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.png", "summary.csv", "summary.md"} <= artifacts
    assert parent.data.tags[names.BEST_CHILD_RUN_ID] in {c.info.run_id for c in children}
    handoff = json.loads((tmp_path / "sweep" / names.PARENT_FILE).read_text())
    assert handoff["run_id"] == parent.info.run_id


@pytest.mark.integration
def test_sweep_preset_names_the_parent_and_a_failed_job_fails_the_parent_not_the_sweep(tmp_path, store):
    sweep_dir = tmp_path / "sweep"
    # job 1 cannot write its model.npz (a directory is in the way): it raises after training
    (sweep_dir / "1" / "model.npz").mkdir(parents=True)
    proc = run_cli(["-m", "+sweep=task3_tricks", "experiment=task2c,task3a,task3c", "data=digits",
                    "trainer.epochs=1", "optimizer.lr=1e20", "model.activation=relu", f"tracking.uri={store}",
                    f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    assert proc.returncode != 0
    client, runs = runs_of(store)
    (parent,) = [r for r in runs if names.PARENT_RUN_ID not in r.data.tags]
    children = {r.info.run_name: r for r in runs if names.PARENT_RUN_ID in r.data.tags}
    assert parent.info.run_name == "task3_tricks"
    assert parent.info.status == "FAILED"  # Hydra skips on_multirun_end when a job fails; the exit hook ends it
    assert {"comparison.png", "summary.csv", "summary.md"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert len(children) == 3  # the sweep went on after the failure
    failed = children["task3a data=digits epochs=1 lr=1e+20 activation=relu"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["error"].startswith("IsADirectoryError")
    for name in ("task2c data=digits epochs=1 lr=1e+20 activation=relu",
                 "task3c data=digits epochs=1 lr=1e+20 activation=relu"):
        assert children[name].info.status == "FINISHED"
        assert children[name].data.tags[names.STOP_REASON] == "diverged"


@pytest.mark.soak
@pytest.mark.parametrize("mode", [[], ["-m", "model.width=4,8"]], ids=["run", "multirun"])
def test_unreachable_server_fails_before_training_with_masked_credentials(tmp_path, mode):
    uri = f"http://alice:s3cret@127.0.0.1:{free_port()}"
    proc = run_cli([*mode, "data=digits", "trainer.epochs=1", f"tracking.uri={uri}"], tmp_path)
    assert proc.returncode != 0
    assert "unreachable" in proc.stderr and "s3cret" not in proc.stderr + proc.stdout
    # fails at the start: no job launched, nothing trained (the app logs "... steps/epoch ..." just before training)
    assert "Traceback" not in proc.stderr and "Launching" not in proc.stdout + proc.stderr
    assert "steps/epoch" not in proc.stdout + proc.stderr


def test_tracking_uri_precedence_and_masking(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLP_SWEEPS_OUTPUTS", str(tmp_path))
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None) == "http://env:5000"
    assert resolve_tracking_uri("http://cfg:5000") == "http://cfg:5000"
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("sqlite:///rel.db") == f"sqlite:///{tmp_path / 'rel.db'}"
    assert mask_credentials("https://bob:pw@host/x?token=abc") == "https://***@host/x?token=***"


@pytest.mark.parametrize("path", ["bulk", "log_batch"])
def test_per_step_losses_reach_mlflow_in_batches_not_one_call_per_step(tmp_path, store, path):
    """A real fit's events through the app's sink into a real store; every metric write to the store is counted."""
    from mlp_core import TrainConfig, fit

    from sweeper.tracking.run import FLUSH_METRICS, MetricSink, RunTracker

    class CountingClient(MlflowClient):
        calls = 0

        def log_batch(self, *args, **kwargs):
            CountingClient.calls += bool(kwargs.get("metrics"))
            return super().log_batch(*args, **kwargs)

    client = CountingClient(store)
    experiment_id = client.create_experiment("batching", artifact_location=(tmp_path / "art").as_uri())
    tracker = RunTracker.start(client, experiment_id, "batching", {})
    assert tracker.bulk_writer is not None  # a sqlite store gets the bulk path
    if path == "log_batch":
        tracker.bulk_writer = None
    else:
        write = tracker.bulk_writer.write

        def counted(*args, **kwargs):
            CountingClient.calls += 1
            return write(*args, **kwargs)

        tracker.bulk_writer.write = counted
    sink = MetricSink(tracker)
    result = fit(load_dataset("digits"), ModelConfig(hidden_sizes=(8,)), TrainConfig(epochs=30, early_stopping=False),
                 on_event=sink)
    sink.flush()
    assert result.num_steps == 30 * 46
    points = len(result.val_steps)
    total = result.num_steps + 3 * points
    assert 1 <= CountingClient.calls <= -(-total // FLUSH_METRICS) + 2  # ~ceil(metrics / 1000), not ~num_steps
    history = client.get_metric_history(tracker.run_id, names.TRAIN_LOSS)
    assert len(history) == result.num_steps
    assert np.allclose([m.value for m in sorted(history, key=lambda m: m.step)], result.train_loss, rtol=1e-6)
    assert len(client.get_metric_history(tracker.run_id, names.VAL_ACCURACY)) == points


def test_main_returns_the_best_validation_loss(tmp_path, monkeypatch):
    from sweeper.app import task

    monkeypatch.setenv("MLP_SWEEPS_OUTPUTS", str(tmp_path))
    cfg = compose_cfg(["data=digits", "trainer.epochs=2", "tracking.enabled=false"])
    objective = task(cfg)  # a DictConfig argument bypasses Hydra's CLI and calls the task function directly
    (history,) = tmp_path.glob("runs/*/*/history.csv")
    val_losses = [float(r["val_loss"]) for r in csv.DictReader(history.open()) if r["val_loss"]]
    assert len(val_losses) == len(range(0, 2 * 46, 46 // 5)) and objective == pytest.approx(min(val_losses))
    assert not (tmp_path / "mlflow.db").exists()  # tracking.enabled=false touches no store


@pytest.mark.soak
def test_a_ctrl_c_that_python_dropped_in_a_finalizer_still_stops_the_run(tmp_path, monkeypatch):
    """The SIGINT handler raises KeyboardInterrupt in whatever Python code runs at that moment. In a finalizer or a
    weakref callback (SQLAlchemy runs some when the garbage collector frees a store write's objects) Python only prints
    "Exception ignored in ..." and goes on; the app raises the interrupt again at the next training event."""
    import weakref

    import mlp_core
    from sweeper.app import task

    real_fit, events = mlp_core.fit, []

    def fit_with_a_dropped_ctrl_c(dataset, model_cfg, train_cfg, on_event=None):
        class Garbage:
            pass

        def interrupted(ref):  # what the SIGINT handler raises if Ctrl-C arrives while this callback runs
            raise KeyboardInterrupt

        def on_event_after_a_dropped_ctrl_c(event):
            events.append(event)
            if len(events) == 1:
                garbage = Garbage()
                ref = weakref.ref(garbage, interrupted)  # noqa: F841 (the callback needs the ref alive)
                del garbage  # the callback runs now, and Python drops its KeyboardInterrupt
            on_event(event)

        return real_fit(dataset, model_cfg, train_cfg, on_event=on_event_after_a_dropped_ctrl_c)

    monkeypatch.setattr(mlp_core, "fit", fit_with_a_dropped_ctrl_c)
    monkeypatch.setenv("MLP_SWEEPS_OUTPUTS", str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        task(compose_cfg(["data=digits", "trainer.epochs=20", "tracking.enabled=false"]))
    assert len(events) == 1  # stopped at the event during which Ctrl-C was dropped, not after 20 epochs


def test_progress_bar_appears_on_a_terminal(tmp_path):
    """stderr on a pseudo-terminal (120 columns): the bar shows epoch, step and the latest validation accuracy."""
    import fcntl
    import os
    import struct
    import subprocess
    import sys
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = dict(os.environ, MLP_SWEEPS_OUTPUTS=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", "data=digits", "trainer.epochs=2", "tracking.enabled=false"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO once the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=HANG) == 0
    output = b"".join(chunks).decode(errors="replace")
    assert "/92 [" in output and "val_acc=" in output and "epoch=" in output, output[-2000:]


@pytest.mark.parametrize("loser_error", [
    "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest",
    'BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"',
])
def test_a_job_that_loses_the_dataset_insert_race_links_the_existing_row(tmp_path, store, loser_error):
    """Two jobs of a sweep log the same dataset at once; the store keeps one row and the loser's insert fails on the
    unique key (sqlite and, through an mlflow server, PostgreSQL word it differently). The loser links that row."""
    from mlflow.exceptions import MlflowException

    from sweeper.tracking.run import RunTracker

    class LosingClient(MlflowClient):
        calls = 0

        def log_inputs(self, *args, **kwargs):
            LosingClient.calls += 1
            if LosingClient.calls == 1:  # the winner's row is in by now: the first call of the loser fails
                super().log_inputs(winner.run_id, *args[1:], **kwargs)
                raise MlflowException(loser_error)
            return super().log_inputs(*args, **kwargs)

    client = LosingClient(store)
    experiment_id = client.create_experiment("race", artifact_location=(tmp_path / "art").as_uri())
    winner = RunTracker.start(client, experiment_id, "winner", {})
    loser = RunTracker.start(client, experiment_id, "loser", {})
    dataset = load_dataset("digits")
    loser.log_dataset(dataset)
    inputs = [client.get_run(t.run_id).inputs.dataset_inputs for t in (winner, loser)]
    assert LosingClient.calls == 2 and [len(i) for i in inputs] == [1, 1]
    assert inputs[0][0].dataset.digest == inputs[1][0].dataset.digest == str(dataset.digest)[:36]
