"""MLflow tracking for one training run (one Hydra job), through ``MlflowClient`` only.

No fluent ``mlflow.start_run``: its process-global "active run" would block nested runs in a sweep. Per-step losses
are buffered by the core's event seam and written in batches, never one call per step: on a sqlite store through the
bulk path of ``sweeper.sqlite_metrics`` (the rows ``log_batch`` writes, at a tenth of the cost), elsewhere with
``log_batch`` (at most 1000 metrics per call). See ``RunTracker``.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from hydra.errors import CompactHydraException

from .resume import Heartbeat

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAG_VALUE = 5000
# MLflow's error codes for a write it refuses (run missing or not active, bad metric): the same from either path.
MLFLOW_REFUSALS = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")
# Keys that describe where/how a run is recorded or launched, not what is trained: excluded from the config hash.
HASH_EXCLUDED_KEYS = ("tracking", "hydra", "launcher", "name", "sweep_name")


class TrackingError(CompactHydraException):
    """The tracking store cannot be used (unreachable server, bad URI). Printed without a traceback."""


def outputs_dir() -> Path:
    """<repo>/outputs, from the package location (never the cwd); $MLP_SWEEPS_OUTPUTS overrides it."""
    env = os.environ.get("MLP_SWEEPS_OUTPUTS")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "outputs"


def mask_credentials(text: str) -> str:
    """Hide user:password@ in URIs and token-like query values in any message."""
    text = re.sub(r"(?<=://)[^/@\s]+@", "***@", str(text))
    return re.sub(r"(?i)((?:token|password|secret|key)=)[^&\s]+", r"\1***", text)


def resolve_tracking_uri(uri: str | None) -> str:
    """``tracking.uri`` > $MLFLOW_TRACKING_URI > sqlite:///<outputs>/mlflow.db. Relative sqlite paths are made absolute."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{outputs_dir() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).expanduser().resolve()}"
    elif "://" not in uri:
        raise TrackingError(
            f"tracking.uri={mask_credentials(uri)!r} is not supported: use sqlite:///<absolute path>.db or "
            "http(s)://host:port (the ./mlruns file store is deprecated)"
        )
    return uri


def default_artifact_location(tracking_uri: str, artifact_location: str | None) -> str | None:
    """Artifacts of a local sqlite store live next to it (<dir of the .db>/mlartifacts); servers decide themselves."""
    if artifact_location:
        return artifact_location if "://" in artifact_location else Path(artifact_location).resolve().as_uri()
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts").as_uri()
    return None


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when an http(s) store does not answer (MLflow itself retries for minutes)."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests  # an MLflow dependency; unlike urllib it takes user:password@ from the URI as basic auth

    health = tracking_uri.rstrip("/") + "/health"
    try:
        response = requests.get(health, timeout=timeout)
    except requests.RequestException as exc:
        raise TrackingError(
            f"MLflow tracking server {mask_credentials(tracking_uri)} is unreachable ({type(exc).__name__}); "
            "start it or set tracking.uri / MLFLOW_TRACKING_URI"
        ) from None
    if response.status_code != 200:
        raise TrackingError(
            f"MLflow tracking server {mask_credentials(tracking_uri)} answered GET /health with HTTP "
            f"{response.status_code}; check the URI and credentials"
        )


def get_or_create_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """Experiment id for ``name``; creates it (tolerating a concurrent creator)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def open_store(tracking_cfg: Any) -> tuple[Any, str, str]:
    """(client, tracking_uri, experiment_id); checks reachability first and creates the store/experiment if needed."""
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_cfg.uri)
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    if uri.startswith("sqlite:"):
        from .store import RetryingClient

        client = RetryingClient(client)  # parallel writers retry "database is locked" (see sweeper.store)
    try:
        experiment_id = get_or_create_experiment(
            client, tracking_cfg.experiment_name, default_artifact_location(uri, tracking_cfg.artifact_location)
        )
    except Exception as exc:  # a store that cannot be opened is a setup problem: one clear sentence
        raise TrackingError(f"Cannot open the MLflow store {mask_credentials(uri)}: {mask_credentials(exc)}") from None
    return client, uri, experiment_id


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"model.hidden_sizes": [64], ...} from nested dicts (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def param_value(value: Any) -> str:
    return "null" if value is None else json.dumps(value) if isinstance(value, (list, bool)) else str(value)


def config_hash(container: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the training-relevant config (without tracking/launcher/labels)."""
    canonical = {k: v for k, v in container.items() if k not in HASH_EXCLUDED_KEYS}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def git_commit() -> tuple[str | None, bool]:
    """(commit of the repo the package runs from, dirty?) or (None, False) outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=5,
        ).stdout.strip()
        return commit or None, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, False


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def write_metrics(client: Any, run_id: str, points: list[tuple], tags: list[tuple[str, str]],
                  bulk: Any = None) -> Any:
    """Write (key, value, step, timestamp_ms) points and (key, value) run tags; returns the bulk path for the next call.

    With ``bulk`` (a ``sweeper.sqlite_metrics.SqliteMetrics``) the points go in as one bulk insert, retried like every
    other write while the store is locked (``sweeper.store.retrying``), and the tags (the owner's heartbeat) follow in
    one small ``log_batch``. The errors ``log_batch`` would raise too (run missing or not active, bad metric name or
    value: MLflow's own checks) propagate. Any other failure means this MLflow differs from what the bulk path expects:
    its transaction was rolled back, so nothing is half-written, and ``log_batch`` takes over for this call and, as the
    returned None says, for the rest of the run. Without ``bulk``: ``log_batch`` calls of at most 1000 points, the tags
    riding along in the first.
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException

    from .store import StoreBusyError, retrying

    run_tags = [RunTag(key, value) for key, value in tags]
    if bulk is not None:
        try:
            retrying(bulk.write, run_id, points, what="log_metrics")
        except StoreBusyError:
            raise
        except Exception as exc:
            if isinstance(exc, MlflowException) and exc.error_code in MLFLOW_REFUSALS:
                raise
            log.warning("sqlite bulk metric path failed (%s); using MLflow's log_batch for the rest of this run",
                        _describe(exc))
        else:
            if run_tags:
                client.log_batch(run_id, tags=run_tags)
            return bulk
    metrics = [Metric(key, value, timestamp, step) for key, value, step, timestamp in points]
    for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk, tags=run_tags)
        run_tags = []
    return None


class MetricWriterError(RuntimeError):
    """The background metric writer failed or died: some metrics of the run did not reach the store."""


# The writer's command line: SIGINT is ignored before anything else runs (WRITER_COMMAND's first statement).
WRITER_COMMAND = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); import sys; "
                  "from sweeper.tracking import _writer_main; _writer_main(int(sys.argv[1]), int(sys.argv[2]))")


def _writer_main(data_fd: int, status_fd: int) -> None:
    """Entry point of the writer process (``python -c WRITER_COMMAND data_fd status_fd``).

    Receives (tracking_uri, run_id) first, then ([(key, value, step, timestamp_ms)], [(tag, value)]) messages, and logs
    them in order. Stops at the ``None`` sentinel (reports ("done", n_points)) or at EOF, when the trainer died without
    closing (it has written what it received). An error is reported once as ("error", masked message); the process
    then keeps reading and discarding, so the trainer never blocks on a full pipe.
    """
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (again, for callers that run this function some other way)
    data_conn, status_conn = Connection(data_fd, writable=False), Connection(status_fd, readable=False)
    try:
        os.nice(5)  # yield to the trainer's BLAS threads when both want the CPU; the writer only has to keep pace
    except OSError:
        pass
    written, failed = 0, False
    try:
        tracking_uri, run_id = data_conn.recv()
        from mlflow.tracking import MlflowClient

        from .sqlite_metrics import SqliteMetrics

        client = MlflowClient(tracking_uri=tracking_uri)
        if tracking_uri.startswith("sqlite:"):
            from .store import RetryingClient

            client = RetryingClient(client)
        bulk = SqliteMetrics.for_client(client)
    except EOFError:
        return
    except Exception as exc:
        status_conn.send(("error", _describe(exc)))
        failed = True
    while True:
        try:
            message = data_conn.recv()
        except EOFError:  # the trainer is gone (kill -9, or closed without the sentinel)
            return
        if message is None:
            if not failed:
                status_conn.send(("done", written))
            return
        if failed:
            continue
        try:
            items, tags = message
            bulk = write_metrics(client, run_id, items, tags, bulk)
            written += len(items)
        except Exception as exc:
            status_conn.send(("error", _describe(exc)))
            failed = True


def _describe(exc: BaseException) -> str:
    return mask_credentials(f"{type(exc).__name__}: {exc}")


class MetricWriter:
    """Writes one run's metrics from a background process, off the trainer's critical path.

    Why: MLflow's sqlite store spends about 100 µs of CPU per metric point inside ``log_batch`` (ORM objects, one INSERT
    each), so a task2c run's ~31k ``train/loss`` points cost ~3 s of the trainer's time; batching cannot remove it.
    The trainer's batch-32 steps barely use the second core (5794 vs 5958 steps/s on 1 vs 2 BLAS threads), so the
    writing can move there: ``send`` only appends to an in-process queue; a feeder thread pickles each
    batch into a pipe; a fresh interpreter (``python -c WRITER_COMMAND``, fork+exec at once: nothing of the trainer's
    BLAS or tqdm threads is inherited) imports MLflow, then writes each batch with ``write_metrics`` in arrival order
    (the sqlite bulk path, or ``log_batch`` calls through ``sweeper.store.RetryingClient``). Its startup (~1.5 s CPU
    importing MLflow, ~2 s opening the store) overlaps training; the feeder thread holds the points meanwhile, so the
    trainer never blocks on a full pipe. It runs at nice +5 with 1 BLAS thread.

    Why not ``multiprocessing`` (spawn or forkserver): its child bootstraps (unpickling, re-importing the parent's
    ``__main__``) before user code can ignore SIGINT, so a Ctrl-C in that window killed the writer (exit -2, points
    lost; tests/sweeper/test_metric_writer.py caught it, and blocking SIGINT around ``start()`` is not inherited), and in
    a joblib (loky) worker the spawned child dies on the global start method "loky". ``subprocess.Popen`` with
    ``start_new_session=True`` puts the writer outside the terminal's foreground process group from its first
    instruction, and works the same in loky workers, submitit jobs and plain runs.

    Measured with benchmarks/bench_tracking.py (task2c, 50 epochs, mnist_assignment, 2 cores, quiet machine, 2 repeats
    each, 2026-11-24): untracked 11.4-12.4 s; this writer +80..+93 % wall time, although the trainer's own time inside
    tracker calls fell to 0.9 s; inline ``log_batch`` +5..+28 % (2.8 s inside the calls); MLflow's async logging -20..+45 %
    (noisy). The writer's ~7 s of CPU (interpreter, MLflow import, store, ~3 s of ORM writes) competes with the
    trainer's two BLAS threads, whose synchronisation suffers badly from a preempted core. So the app writes inline by
    default (since then through ``sweeper.sqlite_metrics`` on sqlite: 0.3 s of a 11 s run) and this writer is opt-in
    (``tracking.background_metrics=true``): it pays off only with a core to spare (``trainer.blas_threads=1``) or a
    slow remote store.

    Contract:
    - ``send(items)``: items are (key, value, step, timestamp_ms); order and steps are kept exactly, nothing is dropped
      or duplicated. Raises ``MetricWriterError`` once the writer has reported a failure or died.
    - ``close(timeout)``: sends the sentinel, waits up to ``timeout`` seconds (default 600) for the writer to write
      everything, and raises ``MetricWriterError`` with the writer's (credential-masked) error if it failed.
    - Ctrl-C: the writer is in its own session and ignores SIGINT, so the trainer can flush, close (drain) and mark the
      run KILLED. If the trainer dies (kill -9), the writer sees EOF on its pipe, having written what it got, and exits.
    """

    def __init__(self, tracking_uri: str, run_id: str):
        from multiprocessing.connection import Connection

        data_recv, data_send = os.pipe()  # non-inheritable: only the writer (pass_fds) gets its ends
        status_recv, status_send = os.pipe()
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        try:
            # its own session: a terminal's Ctrl-C (SIGINT to the foreground process group) never reaches the writer
            self._process = subprocess.Popen(
                [sys.executable, "-c", WRITER_COMMAND, str(data_recv), str(status_send)],
                pass_fds=(data_recv, status_send), env=env, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            os.close(data_recv)  # only the writer holds the read end: its EOF then means "the trainer is gone"
            os.close(status_send)
        self._data_send = Connection(data_send, readable=False)
        self._status_recv = Connection(status_recv, writable=False)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._feeder_error: BaseException | None = None
        self._error: str | None = None
        self._closed = False
        self._feeder = threading.Thread(target=self._feed, name="metric-writer-feeder", daemon=True)
        self._queue.put((tracking_uri, run_id))  # through the pipe, not argv: the URI may hold credentials
        self._feeder.start()
        atexit.register(self._abandon)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _feed(self) -> None:
        while True:
            items = self._queue.get()
            if self._feeder_error is None:
                try:
                    self._data_send.send(items)
                except OSError as exc:  # the writer died: keep consuming so that send() never blocks
                    self._feeder_error = exc
            if items is None:
                return

    def _check(self) -> None:
        if self._error is None and self._status_recv.poll():
            try:
                kind, message = self._status_recv.recv()
            except EOFError:
                kind, message = "error", f"the writer process exited with code {self._process.poll()}"
            if kind == "error":
                self._error = message
        if self._error is None and self._feeder_error is not None:
            self._error = f"the writer process is gone ({type(self._feeder_error).__name__})"
        if self._error is not None:
            raise MetricWriterError(f"MLflow metric writer (pid {self.pid}) failed: {self._error}")

    def send(self, items: list[tuple[str, float, int, int]], tags: list[tuple[str, str]] = ()) -> None:
        """Queue (key, value, step, timestamp_ms) points (and run tags written with the first of their batches)."""
        if self._closed:
            raise MetricWriterError("the metric writer is closed")
        self._check()
        if items:
            self._queue.put((list(items), list(tags)))

    def close(self, timeout: float = 600.0) -> int:
        """Drain and stop the writer; returns the number of points it wrote."""
        if self._closed:
            raise MetricWriterError("the metric writer is already closed")
        self._closed = True
        atexit.unregister(self._abandon)
        self._queue.put(None)
        self._feeder.join()
        self._data_send.close()
        reply = None
        deadline = time.monotonic() + timeout
        while reply is None:
            if self._status_recv.poll(0.5):
                try:
                    kind, message = self._status_recv.recv()
                except EOFError:
                    break
                if kind == "error":
                    self._error = self._error or message
                    continue  # the writer still reads to the sentinel and exits; wait for its EOF
                reply = message
            elif self._process.poll() is not None:
                if not self._status_recv.poll():
                    break
            elif time.monotonic() > deadline:
                self._process.terminate()
                self._error = self._error or f"no reply within {timeout:.0f} s; terminated"
                break
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._status_recv.close()
        if self._error is None and reply is None:
            self._error = f"the writer process exited with code {self._process.returncode} before draining"
        if self._error is not None:
            raise MetricWriterError(f"MLflow metric writer (pid {self.pid}) failed: {self._error}")
        return int(reply)

    def _abandon(self) -> None:
        """At interpreter exit without close(): let the writer write what it has, then exit on EOF."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._feeder.join(timeout=10)


class _DeferredSigint:
    """Hold back Ctrl-C while a store write runs, then deliver it.

    A KeyboardInterrupt raised inside MLflow's sqlite transaction leaves that connection holding the database lock, and
    the error path's own writes (flush, error tag, KILLED status) then wait on the lock for minutes. So each write runs
    with SIGINT recorded rather than raised, and the interrupt is raised right after the write has committed. Only the
    main thread can install signal handlers; elsewhere (and when SIGINT is ignored) this does nothing.
    """

    def __enter__(self) -> "_DeferredSigint":
        self.previous = None
        self.received = False
        if threading.current_thread() is threading.main_thread():
            handler = signal.getsignal(signal.SIGINT)
            if handler is signal.default_int_handler:
                self.previous = handler
                signal.signal(signal.SIGINT, self._record)
        return self

    def _record(self, signum: int, frame: Any) -> None:
        self.received = True

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            if self.received and exc[0] is None:
                raise KeyboardInterrupt


class RunTracker:
    """One MLflow run: params, batched metrics, dataset input, summary, artifacts, terminal status.

    With ``background_metrics=True`` (``tracking.background_metrics=true``) metrics go through a ``MetricWriter``
    process started with the run; ``end`` drains it before the terminal status is set. Without it, ``log_metrics``
    writes itself: through ``bulk_writer`` (``sweeper.sqlite_metrics.SqliteMetrics``) on MLflow's sqlite store,
    with ``log_batch`` otherwise or once the bulk path has failed.
    """

    def __init__(self, client: Any, run_id: str, metric_writer: MetricWriter | None = None):
        from .sqlite_metrics import SqliteMetrics

        self.client = client
        self.run_id = run_id
        self.metric_writer = metric_writer
        # sqlite stores: bulk inserts (sweeper.sqlite_metrics), ~10x cheaper than log_batch; None -> log_batch
        self.bulk_writer = SqliteMetrics.for_client(client) if metric_writer is None else None
        self._timestamp_ms = 0
        self._heartbeat = Heartbeat()

    @classmethod
    def start(cls, client: Any, experiment_id: str, run_name: str, tags: Mapping[str, str],
              parent_run_id: str | None = None, background_metrics: bool = False) -> "RunTracker":
        tags = dict(tags)
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
        return cls(client, run_id, MetricWriter(client.tracking_uri, run_id) if background_metrics else None)

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, param_value(v)[:6000]) for k, v in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items() if v is not None]
        for chunk in _chunks(items, 100):
            self.client.log_batch(self.run_id, tags=chunk)

    def log_metrics(self, items: list[tuple]) -> None:
        """(key, value, step) or (key, value, step, timestamp_ms) tuples: one bulk insert, or log_batch calls of 1000."""
        now = self._now_ms()
        points = [(k, float(v), int(s), t[0] if t else now) for k, v, s, *t in items]
        # the owner's heartbeat (sweeper.resume) goes with a flush, at most every 30 s
        heartbeat = list(self._heartbeat.tags().items()) if self._heartbeat.due() else []
        if self.metric_writer is not None:
            self.metric_writer.send(points, heartbeat)
            return
        with _DeferredSigint():
            self.bulk_writer = write_metrics(self.client, self.run_id, points, heartbeat, self.bulk_writer)

    def log_dataset(self, dataset: Any) -> None:
        """The dataset as a run input: name, split, digest (and where it came from)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        profile = {
            "split": dataset.split,
            "num_train": int(len(dataset.train.y)),
            "num_val": int(len(dataset.val.y)),
            "num_test": None if dataset.test is None else int(len(dataset.test.y)),
            "input_dim": int(dataset.input_dim),
            "mean": float(dataset.mean),
            "std": float(dataset.std),
        }
        entity = Dataset(
            name=f"{dataset.name}-{dataset.split}",
            digest=str(dataset.digest)[:36],
            source_type="mlp_core",
            source=json.dumps({"source": mask_credentials(dataset.source)}),
            profile=json.dumps(profile),
        )
        inputs = [DatasetInput(entity, tags=[InputTag("mlflow.data.context", "train+validation")])]
        try:
            self.client.log_inputs(self.run_id, datasets=inputs)
        except Exception as exc:
            # Parallel jobs of one sweep insert the same dataset row at the same moment; the loser's transaction fails
            # on the unique constraint (and is rolled back). The row exists now, so one more call links it to the run.
            if "UNIQUE constraint" not in str(exc) and "IntegrityError" not in repr(exc):
                raise
            self.client.log_inputs(self.run_id, datasets=inputs)

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str = "FINISHED") -> None:
        """Drain the metric writer, then set the terminal status.

        If the writer failed, this raises ``MetricWriterError`` and leaves the run open: the caller's error path then
        tags the error and calls ``end("FAILED")`` (the writer is gone by then, so that call only sets the status).
        """
        writer, self.metric_writer = self.metric_writer, None
        if writer is not None:
            writer.close()
        with _DeferredSigint():
            self.client.set_terminated(self.run_id, status)
