"""Safe concurrent writes to the MLflow sqlite store: retry-with-backoff on "database is locked", and a local server.

How MLflow 3.17 surfaces a busy sqlite store (read from mlflow/store/db/utils.py): every managed session runs
``PRAGMA busy_timeout = 20000`` and turns ``sqlalchemy.exc.OperationalError`` into
``MlflowException(error_code=TEMPORARILY_UNAVAILABLE)`` chained ``from`` the OperationalError. The busy timeout does not
help when a transaction that already read (``log_batch`` reads the run first, then inserts) must upgrade to a write lock
while another connection holds it: SQLite then answers SQLITE_BUSY at once, to avoid a deadlock. So lock errors still
happen with 4 writers, and they lose data unless the whole call is retried. MLflow rolls the session back before it
raises, so repeating the call is safe (no partial batch is left behind).

A ``?timeout=`` query in the sqlite URI is accepted, but MLflow's own ``PRAGMA busy_timeout`` on every session
overrides it, so it changes nothing. ``MLFLOW_SQLALCHEMYSTORE_*`` only tunes the connection pool and has no busy or retry
knob. See benchmarks/bench_store.py for the measurement behind the decision below.

Decision: DECISION_PLACEHOLDER

API
- ``is_locked_error(exc)``: True for sqlite "database is locked" / "database table is locked" / busy errors, however MLflow
  wraps them.
- ``retrying(fn, *args, attempts=8, base_delay=0.05, max_delay=2.0, what=None, **kwargs)``: calls ``fn``, retries only
  lock errors with jittered exponential backoff, re-raises anything else at once, raises ``StoreBusyError`` after
  ``attempts`` tries.
- ``RetryingClient(client)``: wraps an ``MlflowClient``; its write methods go through ``retrying``, all the rest passes
  through.
- ``LocalServer(backend_store_uri, artifacts_destination=None, ...)``: context manager running ``mlflow server`` on a
  free 127.0.0.1 port in its own process group; ``.uri`` is the http tracking URI, and the whole group is stopped on exit.
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
                raise RuntimeError(f"mlflow server on {self.uri} did not answer GET /health within "
                                   f"{self.startup_timeout:.0f} s" + (f"; see {self.log_path}" if self.log_path else ""))
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
