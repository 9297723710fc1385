"""Safe concurrent writes to the MLflow sqlite store: retry-with-backoff on "database is locked", and a local server.

How MLflow 3.17 surfaces a busy sqlite store (read from mlflow/store/db/utils.py): every managed session runs
``PRAGMA busy_timeout = 20000`` and turns ``sqlalchemy.exc.OperationalError`` into
``MlflowException(error_code=TEMPORARILY_UNAVAILABLE)`` chained ``from`` the OperationalError. So a writer waits up to
20 s for the lock; after that the call fails and its data is lost unless the whole call is repeated. MLflow rolls the
session back before it raises, so repeating the call is safe (no partial batch is left behind).

A ``?timeout=`` query in the sqlite URI is accepted, but MLflow's own ``PRAGMA busy_timeout`` on every session
overrides it, so it changes nothing. ``MLFLOW_SQLALCHEMYSTORE_*`` only tunes the connection pool and has no busy or
retry knob. See benchmarks/bench_store.py for the measurement behind the decision below.

Decision: parallel launches on one machine (joblib, submitit_local) write to the sqlite store directly, through
``RetryingClient`` (``retrying`` on every write). No server. Measured with benchmarks/bench_store.py (4 spawned workers,
2 runs each; per run: 30 params, 4 tags, 2,000 train/loss steps and 20 validation points as 40 log_batch calls, 7
summary
metrics, one artifact, set_terminated; 16,536 metric points per repeat; 2-core machine, 2026-11):

    case (4 workers x 2 runs)                      wall s (median of 3)  startup s  locked  retries  lost points
    sqlite direct, no retry                         4.8 (4.4-9.6)          -           0       -        0 / 49,608
    sqlite direct + retrying()                      5.2 (4.9-5.7)          -           0       0        0 / 49,608
    sqlite ?timeout=60, no retry                    4.2 (4.1-4.2)          -           0       -        0 / 49,608
    mlflow server --workers 1 (same sqlite file)    8.9 (7.6-13.5)         6.3         0       -        0 / 49,608
    with an EXCLUSIVE lock held for 25 s (1 run each):
    sqlite direct, no retry                        28.2                    -           4       -      206 / 16,536
    sqlite direct + retrying()                     31.0                    -           0       4        0 / 16,536
    sqlite ?timeout=60, no retry                   28.9                    -           4       -      303 / 16,536
    mlflow server --workers 1                      35.4                    -           0       -        0 / 16,536
    server startup to a 200 on GET /health was 6.3, 10.1 and 20.5 s in three runs; stopping its group took 6-8 s.

- Plain contention between 4 (and 12) writers produced no lock error at all: MLflow's 20 s busy timeout absorbs it, and
  the wrapper costs nothing when nothing fails (it is one try/except). Wall times vary by ±50 % between identical
  repeats on this 2-core machine, so only large differences mean anything.
- Lock errors appear when one lock is held longer than the 20 s busy timeout: a long read in the UI, a backup, a
  ``sqlite3`` shell, ``mlflow gc``. Then the unwrapped calls failed after 20 s and lost their points (4 failed calls,
  206 points). A ``?timeout=60`` URI failed in exactly the same way after 20 s (MLflow's PRAGMA wins). ``retrying`` lost
  nothing.
- A local ``mlflow server`` also lost nothing (its REST client retries 503s by itself), but it costs 6-20 s of startup
  per sweep, a process group that must be stopped even when the sweep crashes, and a free port. It logged about 1.7x
  slower than direct sqlite. So it buys nothing on one machine. ``LocalServer`` stays here for users who want the UI
  live during a sweep. Across machines (submitit_slurm) sqlite over NFS is not safe: use a real server with a
  server-grade database.
- Worst case before ``StoreBusyError``: each attempt can wait the full 20 s busy timeout, so the default 8 attempts give
  up after about 8 × 20 s + 6 s of backoff. That is long, but a training run is worth more than that.

API
- ``is_locked_error(exc)``: True for sqlite "database is locked" / "database table is locked" / busy errors, however
  MLflow wraps them.
- ``retrying(fn, *args, attempts=8, base_delay=0.05, max_delay=2.0, what=None, **kwargs)``: calls ``fn``, retries only
  lock errors with jittered exponential backoff, re-raises anything else at once, raises ``StoreBusyError`` after
  ``attempts`` tries.
- ``RetryingClient(client)``: wraps an ``MlflowClient``; its write methods go through ``retrying``, all the rest passes
  through.
- ``LocalServer(backend_store_uri, artifacts_destination=None, ...)``: context manager running ``mlflow server`` on a
  free 127.0.0.1 port in its own process group; ``.uri`` is the http tracking URI, and the whole group is stopped on
  exit.

Wiring (sweeper/tracking.py, ``open_store``): ``client = MlflowClient(tracking_uri=uri)`` becomes
``client = RetryingClient(MlflowClient(tracking_uri=uri)) if uri.startswith("sqlite:") else MlflowClient(...)``.
Nothing else changes: ``RunTracker`` and ``get_or_create_experiment`` keep calling ``client.log_batch`` etc. (http
stores already retry 429/5xx inside MLflow's REST client).
"""
from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCKED_MARKERS = ("database is locked", "database table is locked", "database is busy", "sqlite_busy")

# MlflowClient methods that write to the tracking store; RetryingClient retries these on lock errors.
WRITE_METHODS = frozenset({
    "create_experiment", "create_run", "log_batch", "log_metric", "log_param", "set_tag", "delete_tag",
    "log_inputs", "log_outputs", "set_terminated", "update_run", "delete_run", "restore_run", "set_experiment_tag",
    "log_artifact", "log_artifacts", "log_text", "log_dict", "log_figure",
})


class StoreBusyError(RuntimeError):
    """The sqlite store stayed locked through every retry."""


def is_locked_error(exc: BaseException | None) -> bool:
    """True when ``exc`` (or anything in its cause/context chain) is a sqlite lock/busy OperationalError."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        message = str(exc).lower()
        if any(marker in message for marker in LOCKED_MARKERS) and _is_db_error(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _is_db_error(exc: BaseException) -> bool:
    import sqlite3

    if isinstance(exc, sqlite3.OperationalError):
        return True
    try:
        import sqlalchemy.exc

        if isinstance(exc, sqlalchemy.exc.OperationalError):
            return True
    except ImportError:  # pragma: no cover - sqlalchemy ships with mlflow
        pass
    try:
        from mlflow.exceptions import MlflowException

        # MLflow's managed session wraps OperationalError as TEMPORARILY_UNAVAILABLE (message = the sqlite text).
        return isinstance(exc, MlflowException)
    except ImportError:  # pragma: no cover
        return False


def backoff_delay(attempt: int, base_delay: float, max_delay: float) -> float:
    """Delay before retry number ``attempt`` (0-based): base·2^attempt capped at max_delay, jittered to 50-150 %."""
    return min(max_delay, base_delay * (2 ** attempt)) * random.uniform(0.5, 1.5)


def retrying(fn: Callable[..., T], *args: Any, attempts: int = 8, base_delay: float = 0.05, max_delay: float = 2.0,
             what: str | None = None, on_retry: Callable[[BaseException, int], None] | None = None,
             sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried only while it fails with a sqlite lock error.

    Any other exception propagates at once. After ``attempts`` locked failures, raises ``StoreBusyError`` naming
    ``what``, the attempts and the elapsed time, chained from the last lock error. ``on_retry(exc, attempt)`` is called
    before each sleep (used by the benchmark to count retries).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    label = what or getattr(fn, "__name__", "store call")
    start = time.monotonic()
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_locked_error(exc):
                raise
            if attempt == attempts - 1:
                raise StoreBusyError(
                    f"{label}: the MLflow sqlite store was still locked after {attempts} attempts over "
                    f"{time.monotonic() - start:.1f} s; too many concurrent writers for sqlite - use fewer workers or "
                    "an MLflow server (sweeper.store.LocalServer)"
                ) from exc
            if on_retry is not None:
                on_retry(exc, attempt)
            delay = backoff_delay(attempt, base_delay, max_delay)
            log.debug("%s: sqlite store locked (attempt %d/%d), retrying in %.2f s", label, attempt + 1, attempts,
                      delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class RetryingClient:
    """An ``MlflowClient`` whose write methods retry sqlite lock errors; reads and everything else pass through."""

    def __init__(self, client: Any, attempts: int = 8, base_delay: float = 0.05, max_delay: float = 2.0,
                 on_retry: Callable[[BaseException, int], None] | None = None):
        self._client = client
        self._options = dict(attempts=attempts, base_delay=base_delay, max_delay=max_delay, on_retry=on_retry)

    @property
    def wrapped(self) -> Any:
        return self._client

    def __getattr__(self, name: str) -> Any:
        # Unpickling (a joblib worker receives the sweep callback that holds this client) looks up __setstate__
        # before _client exists: without this guard self._client recursed into __getattr__ until RecursionError.
        if "_client" not in self.__dict__:
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if name not in WRITE_METHODS or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return retrying(attr, *args, what=name, **self._options, **kwargs)

        call.__name__ = name
        return call


# ----------------------------------------------------------------------------------------------------------------------
# Local MLflow server
# ----------------------------------------------------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalServer:
    """``mlflow server`` on 127.0.0.1 for the duration of a ``with`` block (own process group, killed on exit).

    ``backend_store_uri`` should already exist and be migrated (create it in the launching process first).
    """

    def __init__(self, backend_store_uri: str, artifacts_destination: str | None = None, port: int | None = None,
                 host: str = "127.0.0.1", workers: int = 1, startup_timeout: float = 90.0,
                 log_path: str | os.PathLike | None = None):
        self.backend_store_uri = backend_store_uri
        self.artifacts_destination = artifacts_destination
        self.host = host
        self.port = port or free_port(host)
        self.workers = workers
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._log_file: Any = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_store_uri,
               "--host", self.host, "--port", str(self.port), "--workers", str(self.workers)]
        if self.artifacts_destination:
            cmd += ["--artifacts-destination", self.artifacts_destination]
        return cmd

    def start(self) -> "LocalServer":
        import requests

        if self.log_path:
            self._log_file = open(self.log_path, "ab")
        out = self._log_file or subprocess.DEVNULL
        start = time.monotonic()
        self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = start + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"mlflow server exited with code {self.process.returncode} during startup"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            try:
                if requests.get(self.uri + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                hint = f"; see {self.log_path}" if self.log_path else ""
                raise RuntimeError(f"mlflow server on {self.uri} did not answer GET /health within "
                                   f"{self.startup_timeout:.0f} s{hint}")
            time.sleep(0.2)
        self.startup_seconds = time.monotonic() - start
        log.info("mlflow server ready on %s after %.1f s", self.uri, self.startup_seconds)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the server's whole process group, SIGKILL after ``timeout``."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # pgid == pid thanks to start_new_session
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        if proc is not None:
            try:  # children (job runner, uvicorn workers) may outlive the leader
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if proc.poll() is None:
                proc.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
