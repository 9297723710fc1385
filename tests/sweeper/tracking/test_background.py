"""sweeper.tracking.MetricWriter: the background process that writes a run's metrics (exactly once, in order, through
Ctrl-C, and never outliving a dead trainer)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from sweeper.tracking.background import MetricWriter, MetricWriterError
from sweeper.tracking.run import RunTracker
from sweeper import names

from ...handshake import HANG, default_sigint, ignores_sigint, wait_for
from ...servers import free_port
from ..sweeper_helpers import REPO

pytestmark = pytest.mark.soak  # a second process, signals and waits: tests/soak.sh runs these on a busy machine


def new_run(store, tmp_path):
    client = MlflowClient(store)
    experiment_id = client.create_experiment("writer", artifact_location=(tmp_path / "art").as_uri())
    return client, client.create_run(experiment_id).info.run_id


def steps_of(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_every_point_arrives_exactly_once_with_its_value_step_and_timestamp(store, tmp_path):
    client, run_id = new_run(store, tmp_path)
    writer = MetricWriter(store, run_id)
    rng = np.random.default_rng(0)
    losses = rng.standard_normal(2600).astype(np.float32).tolist()
    step = 0
    for size in (1, 999, 1000, 1, 599):  # sends below, at and above the 1000-point log_batch limit
        writer.send([(names.TRAIN_LOSS, losses[s], s, 1_700_000_000_000 + s) for s in range(step, step + size)])
        step += size
    writer.send([(names.VAL_LOSS, 0.5, 0, 1_700_000_000_000), (names.VAL_LOSS, 0.25, 2599, 1_700_000_000_001)])
    assert writer.close() == 2600 + 2

    history = client.get_metric_history(run_id, names.TRAIN_LOSS)
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(2600))  # no gap, no duplicate
    by_step = {m.step: m for m in history}
    assert [by_step[s].value for s in range(2600)] == losses  # float32 values survive bit for bit
    assert all(by_step[s].timestamp == 1_700_000_000_000 + s for s in range(2600))
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, names.VAL_LOSS)] == [(0, 0.5), (2599, 0.25)]


def test_the_app_sink_through_a_background_tracker_logs_each_step_once(store, tmp_path):
    """A real fit's events, the app's MetricSink, RunTracker(background_metrics=True): history == training history."""
    from mlp_core import ModelConfig, TrainConfig, fit, load_dataset

    from sweeper.tracking.run import MetricSink

    client = MlflowClient(store)
    experiment_id = client.create_experiment("sink", artifact_location=(tmp_path / "art").as_uri())
    tracker = RunTracker.start(client, experiment_id, "sink", {}, background_metrics=True)
    assert tracker.metric_writer is not None
    sink = MetricSink(tracker)
    result = fit(load_dataset("digits"), ModelConfig(hidden_sizes=(8,)), TrainConfig(epochs=30, early_stopping=False),
                 on_event=sink)
    sink.flush()
    tracker.log_metrics([("epochs", result.epochs, 0)])
    tracker.end("FINISHED")
    assert tracker.metric_writer is None
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["epochs"] == 30
    history = sorted(client.get_metric_history(tracker.run_id, names.TRAIN_LOSS), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(result.num_steps))
    assert np.array_equal([m.value for m in history], result.train_loss)
    assert steps_of(client, tracker.run_id, names.VAL_ACCURACY) == list(result.val_steps)


def test_a_failing_writer_raises_a_clear_masked_error(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # inherited by the spawned writer
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    port = free_port()  # bound, then released: nothing listens there
    writer = MetricWriter(f"http://alice:s3cr3t@127.0.0.1:{port}", "0" * 32)
    writer.send([(names.TRAIN_LOSS, 1.0, 0, 0)])
    with pytest.raises(MetricWriterError, match=r"metric writer \(pid \d+\) failed: \w+") as info:
        writer.close(timeout=HANG)
    assert "s3cr3t" not in str(info.value)
    with pytest.raises(MetricWriterError):
        writer.send([(names.TRAIN_LOSS, 1.0, 1, 0)])  # closed


def test_a_failed_writer_switches_the_tracker_inline_and_hands_back_every_unwritten_point(store, tmp_path):
    """The writer fails (its run does not exist): the tracker notices at a later write, writes inline from then on,
    and the store's own refusal leaves every point (the writer's unconfirmed ones first) in ``take_unwritten``."""
    from mlflow.exceptions import MlflowException

    client, run_id = new_run(store, tmp_path)
    tracker = RunTracker(client, "f" * 32, MetricWriter(store, "f" * 32))  # no such run
    tracker.log_metrics([(names.TRAIN_LOSS, 1.0, 0, 7)])
    sent = []

    def send_again():  # the writer's error surfaces at a later write, once it has reported it
        sent.append(len(sent) + 1)
        tracker.log_metrics([(names.TRAIN_LOSS, 1.0, sent[-1], 7)])

    with pytest.raises(MlflowException, match="f" * 32):
        wait_for(send_again, "the store's refusal from an inline write", poll=0.2)
    assert tracker.metric_writer is None  # inline from now on: end() only sets the status
    unwritten = tracker.take_unwritten()
    assert [step for _, _, step, _ in unwritten] == list(range(len(sent) + 1)) and tracker.take_unwritten() == []


CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from sweeper import names
    from sweeper.tracking.background import MetricWriter
    store, run_id, mode = sys.argv[1:4]
    writer = MetricWriter(store, run_id)
    print(writer.pid, flush=True)
    try:
        for start in range(0, 3000, 500):
            writer.send([(names.TRAIN_LOSS, float(s), s, 0) for s in range(start, start + 500)])
        if mode == "kill after the handoff":  # the feeder took the last batch: the first five are in the pipe
            while not writer._queue.empty():
                time.sleep(0.005)
        if mode.startswith("kill"):
            os.kill(os.getpid(), 9)
        print("sent", flush=True)  # the test sends SIGINT now
        signal.pause()
    except KeyboardInterrupt:
        print("interrupted", writer.close(), flush=True)
""")


def start_child(store, run_id, mode):
    """The trainer's stand-in, in its own process group, with SIGINT as under a terminal (tests/handshake.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.Popen([sys.executable, "-c", CHILD, store, run_id, mode], cwd=REPO, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True,
                            preexec_fn=default_sigint)


def stop(child):
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def test_ctrl_c_to_the_process_group_leaves_the_writer_alive_to_drain(store, tmp_path):
    """SIGINT to the writer itself and to the trainer's group, as a terminal's Ctrl-C does, while the writer still
    starts up: the trainer's handler closes the writer, which writes all 3000 points.

    Each signal is sent at a point the child announces: the writer's pid line, the writer's own SIGINT disposition
    (SIG_IGN, set by its first statement), and the trainer's "sent" line once all points are queued.
    """
    client, run_id = new_run(store, tmp_path)
    child = start_child(store, run_id, "sigint")
    try:
        writer_pid = int(child.stdout.readline())
        # past the writer's first statement, which ignores SIGINT (MLflow may still be importing)
        wait_for(lambda: ignores_sigint(writer_pid), "SIG_IGN for SIGINT in the writer")
        os.kill(writer_pid, signal.SIGINT)  # directly: the writer ignores it
        assert child.stdout.readline() == "sent\n"
        os.killpg(child.pid, signal.SIGINT)  # a terminal's Ctrl-C: the trainer's group (the writer has its own session)
        out, _ = child.communicate(timeout=HANG)
    finally:
        stop(child)
    assert child.returncode == 0 and out.split() == ["interrupted", "3000"]
    assert steps_of(client, run_id, names.TRAIN_LOSS) == list(range(3000))
    assert not pid_running(writer_pid)


def pid_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("mode", ["kill", "kill after the handoff"])
def test_the_writer_exits_at_eof_when_the_trainer_is_killed(store, tmp_path, mode):
    """The writer writes what reached its pipe, then exits at EOF; once the trainer's feeder has handed over the last
    batch, the five before it are all in the pipe, so all of them are written (the writer's confirmations, which
    nobody reads any more, do not stop it)."""
    client, run_id = new_run(store, tmp_path)
    child = start_child(store, run_id, mode)
    try:
        writer_pid = int(child.stdout.readline())
        child.wait(timeout=HANG)
    finally:
        stop(child)
    assert child.returncode == -signal.SIGKILL
    wait_for(lambda: not pid_running(writer_pid), "exit of the writer after the trainer's death")
    # what reached the pipe before the kill was written, in order, each point once
    steps = steps_of(client, run_id, names.TRAIN_LOSS)
    assert steps == list(range(len(steps))) and len(steps) <= 3000
    if mode == "kill after the handoff":
        assert len(steps) >= 2500


@pytest.mark.parametrize("when", ["during training", "before the summary", "before the run ends"])
def test_a_writer_killed_mid_run_loses_no_point(store, tmp_path, when):
    """kill -9 of the writer: the sink writes the points the writer had not confirmed itself and goes on inline; the
    run ends FINISHED with its whole history and its summary, every point once. The sink is driven as the app does
    (fit's events, flush, log_summary, end); the writer dies while training, after the last flush, or at the end."""
    from mlp_core import ModelConfig, TrainConfig, ValidationPoint, fit, load_dataset

    from sweeper.tracking.run import MetricSink

    client = MlflowClient(store)
    experiment_id = client.create_experiment("killed", artifact_location=(tmp_path / "art").as_uri())
    tracker = RunTracker.start(client, experiment_id, "killed", {}, background_metrics=True)
    sink = MetricSink(tracker, run_dir=tmp_path)
    writer_pid = tracker.metric_writer.pid
    points_at_kill = []

    def kill_writer():
        points_at_kill.append(len(client.get_metric_history(tracker.run_id, names.TRAIN_LOSS)))
        os.kill(writer_pid, signal.SIGKILL)
        wait_for(lambda: not pid_running(writer_pid), "the killed writer's exit")

    def on_event(event):
        sink(event)
        if when == "during training" and isinstance(event, ValidationPoint) and event.epoch == 3 and not points_at_kill:
            sink.flush()  # the first epochs' points go to the writer; some are written, some may still be in its pipe
            kill_writer()

    result = fit(load_dataset("digits"), ModelConfig(hidden_sizes=(8,)), TrainConfig(epochs=8, early_stopping=False),
                 on_event=on_event)
    sink.flush()
    if when == "before the summary":  # found by log_summary's own write, the buffer being empty
        kill_writer()
    sink.log_summary([("epochs", result.epochs, 0)], {"stop_reason": result.stop_reason}, [])
    if when == "before the run ends":  # found when the writer is drained
        kill_writer()
    sink.end("FINISHED")
    assert tracker.metric_writer is None and not (tmp_path / names.SPILL_FILE).exists()
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["epochs"] == 8 and run.data.tags["stop_reason"] == "max_epochs"
    history = sorted(client.get_metric_history(tracker.run_id, names.TRAIN_LOSS), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(result.num_steps))  # no gap, no duplicate
    assert np.array_equal([m.value for m in history], result.train_loss)
    assert steps_of(client, tracker.run_id, names.VAL_LOSS) == list(result.val_steps)
    assert points_at_kill[0] < result.num_steps  # the writer died before it had written everything
