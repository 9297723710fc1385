"""How a test waits for a child process to reach a point of its life: never by sleeping a guessed time.

The child signals the point itself (a line on stdout, a row in the store, a file, its signal disposition in /proc) and
the test polls for that signal. Every limit here only turns a hang into a failure: on a busy 2-core machine a Python
process that imports MLflow takes 5-10x its quiet time (tests/soak.sh runs the tests that wait under such a load).
"""
from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

# Seconds. Far above any normal wait (a few seconds on a quiet machine): it bounds a hang, it is no speed claim.
HANG = 600.0


def wait_for(condition: Callable[[], Any], what: str, timeout: float = HANG, proc: Any = None,
             poll: float = 0.1) -> Any:
    """Poll ``condition()`` until it returns a true value, and return that value.

    Fails with an AssertionError naming ``what`` after ``timeout`` seconds, or at once when ``proc`` (a Popen, the child
    that should produce the signal) has exited first. ``poll`` is only the pause between two looks.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the child exited with code {proc.returncode} before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:.0f} s")
        time.sleep(poll)


def store_count(db: Path, query: str) -> int:
    """The number a ``SELECT COUNT(...)`` ``query`` returns from the sqlite store ``db``, read-only (rows a child wrote:
    its signal); 0 while the store does not exist or its tables are still being created."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(query).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict; ProcessLookupError when the process has exited (gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            fields = dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)
    except FileNotFoundError:
        raise ProcessLookupError(f"process {pid} is gone") from None
    if fields.get("State", "").startswith("Z"):
        raise ProcessLookupError(f"process {pid} has exited (zombie)")
    return fields


def _has_signal(pid: int, mask: str, signum: int) -> bool:
    return bool(int(_status(pid)[mask], 16) >> (signum - 1) & 1)


def ignores_sigint(pid: int) -> bool:
    """Has ``pid`` set SIGINT to SIG_IGN (the kernel's record of its disposition)?"""
    return _has_signal(pid, "SigIgn", signal.SIGINT)


def catches_sigint(pid: int) -> bool:
    """Does ``pid`` run a handler for SIGINT (Python's KeyboardInterrupt handler, for instance)?"""
    return _has_signal(pid, "SigCgt", signal.SIGINT)


def default_sigint() -> None:
    """``preexec_fn`` of a child that a test sends Ctrl-C (SIGINT): it starts as it would under a terminal.

    A child inherits an ignored SIGINT, and Python keeps an inherited SIG_IGN instead of raising KeyboardInterrupt. A
    non-interactive shell starts its background jobs that way (``bash -c 'make test &'``, or a runner that starts the
    suite like that), and the test's Ctrl-C would then never reach the child.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
