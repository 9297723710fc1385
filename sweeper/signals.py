"""Ctrl-C and SIGTERM end a run the same way: the run's metrics are flushed and it ends KILLED, and so does a sweep's
parent, with its summary.

SIGTERM is what Slurm sends on preemption and time-out (SIGKILL follows after a grace period) and what ``docker stop``
sends; Python's default action kills the process at once, without ``finally`` blocks. ``install`` makes both signals
raise ``KeyboardInterrupt`` and remembers which one arrived (``received``). ``Deferred`` holds them back while a store
write runs and delivers them right after it committed (an interrupt inside MLflow's sqlite transaction left that
connection holding the database lock, and the KILLED path's own writes then waited on it for minutes), but lets a
second one through at once, so that a write stuck on a dead server never holds Ctrl-C;
``Dropped`` re-raises an interrupt whose exception Python swallowed.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


def _interrupt(signum: int, frame: Any) -> None:
    _received.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install() -> None:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt in this process (main thread only; a handler someone else
    installed, or an ignored signal, is left alone)."""
    if threading.current_thread() is not threading.main_thread():
        return
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for signum, default in defaults.items():
        if signal.getsignal(signum) is default:
            signal.signal(signum, _interrupt)


def received() -> int | None:
    """The first interrupting signal this process received, or None."""
    return _received[0] if _received else None


def received_name() -> str:
    """``SIGTERM``, or ``Ctrl-C`` for SIGINT (and for a KeyboardInterrupt no handler of ours saw)."""
    signum = received()
    return "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"


def exit_code() -> int:
    """128 + the signal's number, as a shell reports a process ended by it (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (received() or signal.SIGINT)


class WriteInterrupted(KeyboardInterrupt):
    """A second interrupt that cut a store write short: what it was writing may not be stored."""


class Deferred:
    """``with Deferred(): write()``: SIGINT/SIGTERM that arrive during the block are recorded and raised after it; a
    second one is raised at once."""

    def __enter__(self) -> "Deferred":
        self.pending: list[int] = []
        self.replaced: list[tuple[int, Any]] = []
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                handler = signal.getsignal(signum)
                if handler in (_interrupt, signal.default_int_handler):
                    self.replaced.append((signum, handler))
                    signal.signal(signum, self._record)
        return self

    def _record(self, signum: int, frame: Any) -> None:
        if self.pending:  # a second interrupt gets through at once, even while the write is stuck (a dead server)
            self._restore()
            _received.append(signum)
            raise WriteInterrupted(signal.Signals(signum).name)
        self.pending.append(signum)
        name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        # os.write, not sys.stderr: the handler may interrupt the main thread inside a write to sys.stderr
        os.write(2, f"mlp-sweep: {name} received during a store write; it stops the run once the write ends (send it "
                    "again to stop now)\n".encode())

    def _restore(self) -> None:
        for signum, handler in self.replaced:
            signal.signal(signum, handler)
        self.replaced = []

    def __exit__(self, *exc: Any) -> None:
        self._restore()
        if self.pending and exc[0] is None:
            _interrupt(self.pending[0], None)


class Dropped:
    """Raise again an interrupt that Python dropped in a finalizer.

    A handler's KeyboardInterrupt is raised in whatever Python code runs at that moment. When that is a finalizer or a
    weakref callback (SQLAlchemy runs some when the garbage collector frees the objects of a store write), Python
    prints "Exception ignored in ..." and carries on, and the run trained on as if Ctrl-C had never come (seen once in
    30 Ctrl-Cs at random moments of a run on a busy machine). While this is entered, ``sys.unraisablehook`` notes such
    an interrupt instead of printing it, and ``check()`` (at every training event) raises it.
    """

    def __enter__(self) -> "Dropped":
        self.dropped = False
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._hook
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.unraisablehook = self._previous_hook

    def _hook(self, unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            self.dropped = True
        else:
            self._previous_hook(unraisable)

    def check(self) -> None:
        if self.dropped:
            self.dropped = False
            raise KeyboardInterrupt(received_name())
