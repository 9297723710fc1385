"""A tracking server that fails after ``/health`` answered: the job ends with one line within a bounded time, its
unsaved metrics spilled to the run dir, and ``mlp-sweep-replay`` uploads them once the server is back, idempotently.

A real ``mlflow server`` is killed mid-run and restarted on the same store; the API failures (500s, a hang) come from a
tiny HTTP server in this process whose ``/health`` answers 200 and whose API fails.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeper import names
from sweeper.tracking import store
from sweeper.tracking.spill import read_spill

from ...handshake import wait_for
from ...servers import LocalServer
from ..sweeper_helpers import sqlite_uri

EXIT_BOUND = 90.0  # seconds: the bound on a job facing a dead server (a hang bound, not a speed claim)
REPLAY = [str(Path(sys.executable).parent / "mlp-sweep-replay")]


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_", "MLP_SWEEPS_"))}
    return {**env, "MLP_SWEEPS_OUTPUTS": str(tmp_path / "outputs")}


def start_job(tmp_path: Path, args: list[str]) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "job.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=tmp_path, env=cli_env(tmp_path),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def wait_bounded(proc: subprocess.Popen, log: Path, bound: float = EXIT_BOUND) -> float:
    start = time.monotonic()
    try:
        proc.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the job was still alive {bound:.0f} s after the store failed:\n" + log.read_text()[-3000:])
    return time.monotonic() - start


def one_error_line(log: Path) -> str:
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, text[-3000:]
    return errors[0]


# ------------------------------------------------------------------------------------------ a server killed mid-run

@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.integration
@pytest.mark.parametrize("background", [False, True], ids=["inline", "background writer"])
def test_a_server_killed_mid_run_ends_the_job_and_the_spill_replays_without_loss(tmp_path, migrated_db, background):
    """Inline writes, or the background writer (whose unconfirmed points are spilled with the trainer's)."""
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    backend, arts = sqlite_uri(tmp_path / "mlflow.db"), str(tmp_path / "arts")
    server = LocalServer(backend, artifacts_destination=arts, log_path=tmp_path / "server.log").start()
    try:
        proc, log = start_job(tmp_path, ["data=digits", "trainer.epochs=100000", "trainer.early_stopping.enabled=false",
                                         f"tracking.uri={server.uri}", f"tracking.background_metrics={background}"])
        client = MlflowClient(server.uri)

        def training_run():
            experiment = client.get_experiment_by_name("mlp-sweeps")
            runs = [] if experiment is None else client.search_runs([experiment.experiment_id])
            return next((r for r in runs if names.TRAIN_LOSS in r.data.metrics), None)

        try:
            run = wait_for(training_run, "a run with train/loss points on the server", proc=proc)
        except AssertionError as exc:
            pytest.fail(f"{exc}:\n{log.read_text()[-3000:]}")
    finally:
        server.stop()  # the whole process group, mid-run
    elapsed = wait_bounded(proc, log)
    print(f"the job exited {elapsed:.1f} s after the server was killed")  # reported with -rP, never asserted
    assert proc.returncode == 1
    line = one_error_line(log)
    assert server.uri in line and "failed during training" in line and run.info.run_id in line, line
    run_dir = Path(re.search(r"`mlp-sweep-replay (\S+)`", line).group(1))
    header, spilled, _ = read_spill(run_dir / names.SPILL_FILE)
    assert header["run_id"] == run.info.run_id and spilled

    with LocalServer(backend, artifacts_destination=arts, port=server.port, log_path=tmp_path / "server2.log"):
        first = subprocess.run([*REPLAY, str(run_dir)], capture_output=True, text=True, timeout=600,
                               env=cli_env(tmp_path))
        assert first.returncode == 0, first.stderr
        losses = client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)
        steps = sorted(m.step for m in losses)
        # every step from the first to the last one trained is there exactly once: nothing lost, nothing doubled
        assert steps == list(range(steps[0], steps[-1] + 1))
        assert steps[-1] == max(step for key, _, step, _ in spilled if key == names.TRAIN_LOSS)
        stored = {key: len(client.get_metric_history(run.info.run_id, key)) for key in names.CURVE_METRICS}
        second = subprocess.run([*REPLAY, str(run_dir)], capture_output=True, text=True, timeout=600,
                                env=cli_env(tmp_path))
        assert second.returncode == 0 and " 0 metric points uploaded" in second.stdout, second.stdout + second.stderr
        assert {key: len(client.get_metric_history(run.info.run_id, key)) for key in names.CURVE_METRICS} == stored
        ended = client.get_run(run.info.run_id)
        assert ended.info.status == "FAILED" and ended.data.tags[names.ERROR] == header["error"]


# ------------------------------------------------------------------------------ an API that fails after /health

class FailingApi(ThreadingHTTPServer):
    """``/health`` answers 200; the API answers 500, or never (``hang``), except the experiment lookup when
    ``experiment`` is set (then only the runs API fails: the store opens, the sweep's parent run cannot be made).
    In ``forward`` mode every request goes to the real server ``target`` until the test sets ``mode``."""

    daemon_threads = True

    def __init__(self, mode: str, experiment: bool = False, target: str | None = None):
        self.mode, self.experiment, self.target, self.released = mode, experiment, target, threading.Event()
        self.requests: list[str] = []
        self.hanging = 0
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        server: FailingApi = self.server
        server.requests.append(self.path)
        if self.path.startswith("/health"):
            return self._answer(200, {"status": "OK"})
        if server.experiment and "experiments/get-by-name" in self.path:
            return self._answer(200, {"experiment": {"experiment_id": "1", "name": "mlp-sweeps",
                                                     "artifact_location": "mlflow-artifacts:/1",
                                                     "lifecycle_stage": "active",
                                                     # set up as this release creates it: no tag to add
                                                     "tags": [{"key": k, "value": v}
                                                              for k, v in store.EXPERIMENT_TAGS.items()]}})
        if server.mode == "forward":
            return self._forward(server.target)
        if server.mode == "hang":
            server.hanging += 1
            server.released.wait()
            return None
        return self._answer(500, {"error_code": "INTERNAL_ERROR", "message": "the database is gone"})

    def _forward(self, target: str) -> None:
        import requests

        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = requests.request(self.command, target + self.path, data=body, timeout=60,
                                  headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PATCH = do_DELETE = _handle


@pytest.mark.soak
@pytest.mark.integration
@pytest.mark.parametrize("mode, form", [("500", "run"), ("hang", "run"), ("500", "sweep"), ("500", "run-runs-api")],
                         ids=["500-run", "hang-run", "500-sweep-parent", "500-runs-api-run"])
def test_an_api_failing_after_health_ends_the_launch_with_one_line(tmp_path, mode, form):
    api = FailingApi(mode, experiment=form != "run")
    try:
        args = ["data=digits", "trainer.epochs=1", f"tracking.uri={api.uri}"]
        proc, log = start_job(tmp_path, ["-m", *args, "model.width=4,8"] if form == "sweep" else args)
        wait_bounded(proc, log)
    finally:
        api.close()
    assert proc.returncode == 1
    line = one_error_line(log)
    assert api.uri in line, line
    text = log.read_text()
    assert "Launching" not in text and "parameters," not in text, text[-3000:]  # no job started, no data loaded
    assert not list((tmp_path / "outputs").rglob(names.SPILL_FILE))
    if form == "sweep":
        assert "sweep's parent run" in line and "no job was launched" in line, line
        assert any("runs/search" in path or "runs/create" in path for path in api.requests)
    if form == "run-runs-api":  # the experiment was found; the runs API failed in the job's first search
        assert "failed while looking for orphaned runs" in line, line


# ------------------------------------------------------------------------------------- Ctrl-C and a stuck write

@pytest.mark.soak
def test_a_second_interrupt_gets_through_a_deferred_block_at_once():
    from sweeper import signals

    reached = []
    with pytest.raises(KeyboardInterrupt):
        with signals.Deferred():
            os.kill(os.getpid(), signal.SIGINT)  # the first is held for the end of the block
            reached.append("first held")
            os.kill(os.getpid(), signal.SIGINT)  # the second is raised here
            reached.append("second held")
    assert reached == ["first held"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_a_repeated_sigterm_never_cuts_a_write_but_a_ctrl_c_does():
    """A launcher forwards SIGTERM to workers that already got it from the group: that must not cut the write."""
    from sweeper import signals

    held = signals.Deferred()
    held.pending, held.replaced = [signal.SIGTERM], []
    held._record(signal.SIGTERM, None)  # ignored: the write goes on
    assert held.pending == [signal.SIGTERM]
    with pytest.raises(signals.WriteInterrupted):
        held._record(signal.SIGINT, None)
    signals._received.remove(signal.SIGINT)  # the record of this process's signals, as before the test


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.integration
def test_a_second_ctrl_c_gets_through_a_write_stuck_on_a_hanging_server(tmp_path, migrated_db):
    """The server starts hanging mid-run (behind a forwarding proxy), with a 300 s timeout per attempt: the first
    Ctrl-C waits for the stuck write, the second ends the job at once, its unsaved points spilled."""
    from ...handshake import default_sigint

    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    with LocalServer(sqlite_uri(tmp_path / "mlflow.db"), artifacts_destination=str(tmp_path / "arts"),
                     log_path=tmp_path / "server.log") as server:
        api = FailingApi("forward", target=server.uri)
        try:
            log = tmp_path / "job.log"
            with log.open("w") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "sweeper", "data=digits", "trainer.epochs=100000",
                     "trainer.early_stopping.enabled=false", f"tracking.uri={api.uri}", "tracking.http_timeout=300"],
                    cwd=tmp_path, env=cli_env(tmp_path), stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=default_sigint)
            client = MlflowClient(server.uri)

            def training_run():
                experiment = client.get_experiment_by_name("mlp-sweeps")
                runs = [] if experiment is None else client.search_runs([experiment.experiment_id])
                return next((r for r in runs if names.TRAIN_LOSS in r.data.metrics), None)

            run = wait_for(training_run, "a run with train/loss points", proc=proc)
            api.mode = "hang"
            wait_for(lambda: api.hanging, "a metric write stuck on the hanging server", proc=proc)
            os.kill(proc.pid, signal.SIGINT)
            wait_for(lambda: "received during a store write" in log.read_text(), "the first Ctrl-C held", proc=proc)
            os.kill(proc.pid, signal.SIGINT)
            wait_bounded(proc, log, bound=EXIT_BOUND)  # far below the stuck write's 300 s
        finally:
            api.close()
    text = log.read_text()
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in text, text[-3000:]
    assert "interrupted by Ctrl-C" in text and "mlp-sweep-replay" in text, text[-3000:]
    spills = list((tmp_path / "outputs").rglob(names.SPILL_FILE))
    assert len(spills) == 1 and read_spill(spills[0]).header["run_id"] == run.info.run_id


# ------------------------------------------------------------------------------- a failure after training

def test_a_failure_after_training_spills_the_summary_and_the_replay_finishes_the_run(tmp_path, migrated_db):
    """The artifact store breaks after training (its directory replaced by a file): the summary metrics, the tags and
    the artifact files are spilled with status FINISHED; replayed (twice) they are all in the run exactly once."""
    from sweeper.tracking.run import MetricSink, RunTracker
    from sweeper.tracking.spill import StoreUnavailable, replay

    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    client = MlflowClient(sqlite_uri(tmp_path / "mlflow.db"))
    arts = tmp_path / "arts"
    experiment_id = client.create_experiment("mlp-sweeps", artifact_location=arts.as_uri())
    tracker = RunTracker.start(client, experiment_id, "job", {})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    history = run_dir / "history.csv"
    history.write_text("step,train_loss\n1,2.3\n")
    sink = MetricSink(tracker, run_dir=run_dir)
    sink.buffer = [(names.TRAIN_LOSS, 2.3, 1, 1000), (names.TRAIN_LOSS, 2.2, 2, 1001)]
    sink.flush()
    arts.mkdir()
    (arts / tracker.run_id).write_text("a file where the run's artifact directory goes\n")
    summary = [(names.BEST_VAL_LOSS, 0.5, 0), (names.EPOCHS, 3.0, 0)]
    with pytest.raises(StoreUnavailable, match="failed after training") as caught:
        sink.log_summary(summary, {names.STOP_REASON: "max_epochs"}, [history])
    assert f"mlp-sweep-replay {run_dir}" in str(caught.value) and sink.store_failed
    header, points, _ = read_spill(run_dir / names.SPILL_FILE)
    assert header["status"] == "FINISHED" and [p[:3] for p in points] == [tuple(m) for m in summary]

    (arts / tracker.run_id).unlink()  # the artifact store works again
    assert replay(client, header, points) == (0, 2, "FINISHED")  # the metrics had reached the store
    assert replay(client, header, points)[:2] == (0, 2)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[names.STOP_REASON] == "max_epochs"
    assert run.data.metrics[names.BEST_VAL_LOSS] == 0.5
    assert len(client.get_metric_history(tracker.run_id, names.BEST_VAL_LOSS)) == 1
    assert len(client.get_metric_history(tracker.run_id, names.TRAIN_LOSS)) == 2
    assert [f.path for f in client.list_artifacts(tracker.run_id)] == ["history.csv"]


@pytest.mark.slow
@pytest.mark.integration
def test_a_store_failing_at_the_finished_status_spills_it_and_the_replay_sets_it(tmp_path, migrated_db, monkeypatch):
    """All of a run is stored but its FINISHED status: the server dies just before it. The status is spilled, the
    sentence names the replay, and the replay (server back) ends the run FINISHED, so a relaunch reuses it instead of
    marking it KILLED and training it again."""
    from sweeper.tracking.run import MetricSink, RunTracker
    from sweeper.tracking.spill import StoreUnavailable

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # what the job's tracking.http_* settings bound
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    backend, arts = sqlite_uri(tmp_path / "mlflow.db"), str(tmp_path / "arts")
    server = LocalServer(backend, artifacts_destination=arts, log_path=tmp_path / "server.log").start()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    try:
        client = MlflowClient(server.uri)
        tracker = RunTracker.start(client, client.create_experiment("mlp-sweeps"), "job", {})
        sink = MetricSink(tracker, run_dir=run_dir)
        sink.buffer = [(names.TRAIN_LOSS, 2.3, 0, 1000), (names.TRAIN_LOSS, 2.2, 1, 1001)]
        sink.flush()
        sink.log_summary([(names.EPOCHS, 3.0, 0)], {names.STOP_REASON: "max_epochs"}, [])
    finally:
        server.stop()
    with pytest.raises(StoreUnavailable, match="failed after training") as caught:
        sink.end("FINISHED")
    assert "its end status is in" in str(caught.value) and f"mlp-sweep-replay {run_dir}" in str(caught.value)
    header, points, _ = read_spill(run_dir / names.SPILL_FILE)
    assert header["status"] == "FINISHED" and points == []

    with LocalServer(backend, artifacts_destination=arts, port=server.port, log_path=tmp_path / "server2.log"):
        replayed = subprocess.run([*REPLAY, str(run_dir)], capture_output=True, text=True, timeout=600,
                                  env=cli_env(tmp_path))
        assert replayed.returncode == 0 and "the run is FINISHED" in replayed.stdout, replayed.stderr
        run = client.get_run(tracker.run_id)
        assert run.info.status == "FINISHED" and run.data.tags[names.STOP_REASON] == "max_epochs"
        assert len(client.get_metric_history(tracker.run_id, names.TRAIN_LOSS)) == 2
