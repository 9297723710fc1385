"""The opt-in background metric writer (``tracking.background_metrics=true``): a run's metrics written from a separate
process, off the trainer's critical path. Inline writes are the default; why: docs/decisions.md."""
from __future__ import annotations

import atexit
import collections
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from ..paths import REPO_ROOT
from ..redact import describe
from .store import client_for
from .writes import write_metrics


class MetricWriterError(RuntimeError):
    """The background metric writer failed or died: some metrics of the run did not reach the store. ``unwritten``
    holds the points it did not confirm, in order (``RunTracker`` writes them itself, or leaves them to be spilled)."""

    def __init__(self, message: str, unwritten: list | None = None):
        super().__init__(message)
        self.unwritten = list(unwritten or [])


# The writer's command line: SIGINT is ignored before anything else runs (WRITER_COMMAND's first statement).
WRITER_COMMAND = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); import sys; "
                  "from sweeper.tracking.background import _writer_main; _writer_main(int(sys.argv[1]), int(sys.argv[2]))")


def _writer_main(data_fd: int, status_fd: int) -> None:
    """Entry point of the writer process (``python -c WRITER_COMMAND data_fd status_fd``).

    Receives (tracking_uri, run_id) first, then ([(key, value, step, timestamp_ms)], [(tag, value)]) messages, and logs
    them in order, confirming each written message with ("ok", n_points). Stops at the ``None`` sentinel (reports
    ("done", n_points)) or at EOF, when the trainer died without closing (it has written what it received). An error
    is reported once as ("error", masked message); the process then keeps reading and discarding, so the trainer never
    blocks on a full pipe.
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
        from .mlflow_private.sqlite_metrics import SqliteMetrics

        client = client_for(tracking_uri)
        bulk = SqliteMetrics.for_client(client)
    except EOFError:
        return
    except Exception as exc:
        status_conn.send(("error", describe(exc)))
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
            status_conn.send(("error", describe(exc)))
            failed = True
            continue
        try:
            status_conn.send(("ok", len(items)))
        except OSError:  # the trainer is gone (its end of the pipe closed): write on what it sent, up to EOF
            pass



class MetricWriter:
    """Writes one run's metrics from a background process (``python -c WRITER_COMMAND``, its own session).

    ``send`` only appends to an in-process queue; a feeder thread pickles each batch into a pipe; the writer process
    writes each batch with ``write_metrics`` in arrival order. Why a separate interpreter started by ``Popen`` and not
    ``multiprocessing``, and what it measured against inline writes: docs/decisions.md.

    Contract:
    - ``send(items)``: items are (key, value, step, timestamp_ms); order and steps are kept exactly, nothing is dropped
      or duplicated. Raises ``MetricWriterError`` once the writer has reported a failure or died; the error carries
      every point the writer did not confirm (``unwritten``), so a failed writer loses nothing.
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
        self._pending: collections.deque = collections.deque()  # sent batches the writer has not confirmed, in order
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
        while self._error is None and self._status_recv.poll():
            try:
                kind, message = self._status_recv.recv()
            except EOFError:
                kind, message = "error", f"the writer process exited with code {self._process.poll()}"
            if kind == "ok":
                self._pending.popleft()
            elif kind == "error":
                self._error = message
        if self._error is None and self._feeder_error is not None:
            self._error = f"the writer process is gone ({type(self._feeder_error).__name__})"
        if self._error is not None:
            raise self._failure()

    def _failure(self) -> MetricWriterError:
        return MetricWriterError(f"MLflow metric writer (pid {self.pid}) failed: {self._error}", self.unwritten())

    def unwritten(self) -> list[tuple]:
        """The points sent but not (yet) confirmed as written, in the order they were sent."""
        return [point for batch in self._pending for point in batch]

    def send(self, items: list[tuple[str, float, int, int]], tags: list[tuple[str, str]] = ()) -> None:
        """Queue (key, value, step, timestamp_ms) points (and run tags written with the first of their batches)."""
        if self._closed:
            raise MetricWriterError("the metric writer is closed")
        self._check()
        if items:
            self._pending.append(list(items))
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
                if kind == "ok":
                    self._pending.popleft()
                    continue
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
            raise self._failure()
        return int(reply)

    def _abandon(self) -> None:
        """At interpreter exit without close(): let the writer write what it has, then exit on EOF."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._feeder.join(timeout=10)

