"""Ctrl-C and SIGTERM end a run the same way: the run's metrics are flushed and it ends KILLED, and so does a sweep's
parent, with its summary.

SIGTERM is what Slurm sends on preemption and time-out (SIGKILL follows after a grace period) and what ``docker stop``
sends; Python's default action kills the process at once, without ``finally`` blocks. ``install`` makes both signals
raise ``KeyboardInterrupt`` and remembers which one arrived (``received``). ``Deferred`` holds them back while a store
write runs and delivers them right after it committed (an interrupt inside MLflow's sqlite transaction left that
connection holding the database lock, and the KILLED path's own writes then waited on it for minutes);
``raise_if_received`` re-raises an interrupt whose exception Python swallowed.
"""
from __future__ import annotations

import signal
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


def raise_if_received() -> None:
    """Raise KeyboardInterrupt again if an interrupt arrived before. A handler's exception is lost when the signal lands
    inside a finalizer or a weakref callback (Python prints "Exception ignored in ..."), so the training loop's event
    callback calls this to end the run anyway at its next event."""
    if _received:
        raise KeyboardInterrupt(signal.Signals(_received[0]).name)


def received_name() -> str:
    """``SIGTERM``, or ``Ctrl-C`` for SIGINT (and for a KeyboardInterrupt no handler of ours saw)."""
    signum = received()
    return "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"


def exit_code() -> int:
    """128 + the signal's number, as a shell reports a process ended by it (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (received() or signal.SIGINT)


class Deferred:
    """``with Deferred(): write()``: SIGINT/SIGTERM that arrive during the block are recorded and raised after it."""

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
        self.pending.append(signum)

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.replaced:
            signal.signal(signum, handler)
        if self.pending and exc[0] is None:
            _interrupt(self.pending[0], None)
