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

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Seconds a launcher waits, after the first signal, for its worker processes to end their runs before it goes on to
# end the sweep (joblib then kills its workers with SIGKILL). Below Slurm's default KillWait (30 s).
WORKER_GRACE_SECONDS = 25.0
_received: list[int] = []
# submitit's checkpoint-and-requeue handler when this process is a Slurm job of submitit (see requeue_if_preempted)
_requeue_handler: list[Any] = []


def _interrupt(signum: int, frame: Any) -> None:
    if signum == signal.SIGTERM and signal.SIGTERM in _received:
        return  # a repeated SIGTERM (the launcher forwarding the one the group already got) must not cut the clean-up
    first = not _received
    _received.append(signum)
    if first:
        _let_workers_finish(forward=signum == signal.SIGTERM)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _submitit_handler(handler: Any, name: str) -> bool:
    """Is ``handler`` submitit's ``SignalHandler.<name>`` (bound method) that a submitit job process installs?"""
    function = getattr(handler, "__func__", None)
    return (function is not None and getattr(function, "__qualname__", "") == f"SignalHandler.{name}"
            and getattr(function, "__module__", "").startswith("submitit"))


def install() -> list[tuple[int, Any]]:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt in this process (main thread only; a handler someone else
    installed, or an ignored signal, is left alone). Returns the (signal, handler) pairs it replaced, for ``restore``.

    In a Slurm job of submitit, submitit ignores SIGTERM (it logs "Bypassing signal SIGTERM") and checkpoints and
    requeues the job on SIGUSR2 (Slurm's warning before the time limit) by exiting at once: both now end the run KILLED
    first, and ``requeue_if_preempted`` then hands over to submitit's requeue.
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    replaced = []
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for signum, default in defaults.items():
        handler = signal.getsignal(signum)
        if handler is default or _submitit_handler(handler, "bypass"):
            replaced.append((signum, signal.signal(signum, _interrupt)))
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        handler = signal.getsignal(signum)
        if _submitit_handler(handler, "checkpoint_and_try_requeue"):
            _requeue_handler[:] = [handler]
            replaced.append((signum, signal.signal(signum, _interrupt)))
    return replaced


def restore(replaced: list[tuple[int, Any]]) -> None:
    """Put back the handlers ``install`` replaced: a worker process that ended its run shows, by no longer catching
    SIGTERM, that it has nothing left to save (the launcher waits for that, see ``_let_workers_finish``)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, handler in reversed(replaced):
        signal.signal(signum, handler)


def requeue_if_preempted() -> None:
    """In a Slurm job of submitit interrupted by SIGTERM (preemption, ``scancel --signal=TERM``) or by submitit's
    SIGUSR2 (time limit): let submitit checkpoint the job and ask Slurm to requeue it, then exit (SystemExit). The
    requeued job runs the same config again; a config that FINISHED meanwhile is skipped (tracking.skip_finished).
    Does nothing anywhere else, nor when Slurm requeues the job itself (``scontrol requeue``, preemption with
    requeue: Slurm then counts a restart that this attempt's ``SLURM_RESTART_COUNT`` does not have yet).

    Otherwise the job is over for good and this raises, so that it ends with an Exception, which submitit stores as
    the job's result: when submitit refuses the requeue (a time-out after ``max_num_timeout`` requeues: "timed-out too
    many times"), when ``scontrol requeue`` fails, and when Slurm ends the job (``scancel``, Slurm's own time limit:
    its state is then COMPLETING without a new restart), and when Slurm cannot say what became of the job (``scontrol``
    failing through its retries): an interrupt escaping instead left no result file, and the launcher, which learns
    that a job ended from that file when Slurm has no accounting (``sacct``), waited forever."""
    import logging

    signum = received()
    if not _requeue_handler or signum is None or signum == signal.SIGINT:
        return
    job = slurm_job()
    state = job.get("JobState", "unknown")
    if state != "RUNNING":
        if job and int(job.get("Restarts", "0")) > int(os.environ.get("SLURM_RESTART_COUNT", "0")):
            logging.getLogger(__name__).warning("Slurm job %s is %s: requeued by Slurm, not by this job",
                                                os.environ.get("SLURM_JOB_ID"), state)
            return
        raise SlurmJobEnded(f"Slurm job {os.environ.get('SLURM_JOB_ID')} ended without a requeue (JobState={state}, "
                            f"Reason={job.get('Reason')}: scancel, or Slurm's own time limit)")
    _requeue_handler[0](signum, None)


class SlurmJobEnded(RuntimeError):
    """Slurm stopped this job and does not run it again (``scancel``, its time limit)."""


SCONTROL_BUDGET_SECONDS = 15.0  # within Slurm's KillWait (30 s by default) between SIGTERM and SIGKILL
SCONTROL_RETRY_SECONDS = 1.0


def slurm_job() -> dict[str, str]:
    """This Slurm job as ``scontrol show job`` reports it (JobState, Reason, Restarts, ...), or {} when unknown.
    A busy slurmctld (a time limit being enforced on a loaded node) can fail a call; it is tried again, a second
    apart, for ``SCONTROL_BUDGET_SECONDS``."""
    import subprocess

    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return {}
    deadline = time.monotonic() + SCONTROL_BUDGET_SECONDS
    while True:
        try:
            out = subprocess.run(["scontrol", "show", "job", "--oneliner", job], capture_output=True, text=True,
                                 timeout=max(1.0, deadline - time.monotonic())).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        found = dict(item.split("=", 1) for item in out.split() if "=" in item)
        if "JobState" in found:
            return found
        if time.monotonic() + SCONTROL_RETRY_SECONDS >= deadline:
            return {}
        time.sleep(SCONTROL_RETRY_SECONDS)


def thread_lock_for(bar_class: Any) -> None:
    """Give tqdm's ``bar_class`` a thread lock before its first bar in this process, unless it has a lock already.

    tqdm's default lock holds a multiprocessing RLock. In a process whose start method is not fork (joblib's loky
    workers) that is a named POSIX semaphore, registered with the resource tracker and unlinked only by a finalizer.
    A worker that joblib kills after an interrupt (SIGKILL, once ``_let_workers_finish`` has let its run end) never
    runs that finalizer, so at shutdown the tracker reported "There appear to be 2 leaked semaphore objects" (and
    unlinked them). A job's bars live in one process and need no lock shared across processes: a thread lock is
    enough, and with no named semaphore there is nothing to leak."""
    if not hasattr(bar_class, "_lock"):
        bar_class.set_lock(threading.RLock())


def _children() -> list[int]:
    """Pids of this process's live children (Linux /proc; empty elsewhere)."""
    me, pids = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1] == str(me) and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _in_my_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == os.getpgrp()
    except ProcessLookupError:
        return False


def _sigterm_disposition(pid: int) -> str:
    """"caught", "ignored" or "default" for SIGTERM in ``pid`` ("gone" once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            fields = dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)
    except OSError:
        return "gone"
    if fields.get("State", "").startswith("Z"):
        return "gone"
    bit = 1 << (signal.SIGTERM - 1)
    if int(fields.get("SigCgt", "0"), 16) & bit:
        return "caught"
    return "ignored" if int(fields.get("SigIgn", "0"), 16) & bit else "default"


def _let_workers_finish(forward: bool) -> None:
    """A launcher with worker processes (joblib's loky workers) kills them with SIGKILL as soon as the interrupt
    reaches it, before they could end their runs. So first: send SIGTERM on to the workers that did not get it from
    the process group (``kill <pid>`` of the launcher, ``docker stop``), then wait, at most ``WORKER_GRACE_SECONDS``,
    until no worker catches SIGTERM any more (a worker puts back the default handler once its run has ended, see
    ``restore``). Children that ignore SIGTERM (loky's resource tracker) or live in a session of their own (the
    background metric writer, which the run drains itself) are left alone."""
    workers = [pid for pid in _children() if _in_my_group(pid) and _sigterm_disposition(pid) != "ignored"]
    if not workers:
        return
    if forward:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WORKER_GRACE_SECONDS
    while time.monotonic() < deadline and any(_sigterm_disposition(pid) == "caught" for pid in workers):
        time.sleep(0.05)


def received() -> int | None:
    """The first interrupting signal this process received, or None."""
    return _received[0] if _received else None


def received_name_of(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def received_name() -> str:
    """``SIGTERM`` (or the other signal's name), or ``Ctrl-C`` for SIGINT (and for a KeyboardInterrupt no handler of
    ours saw)."""
    signum = received()
    return "Ctrl-C" if signum in (None, signal.SIGINT) else signal.Signals(signum).name


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
        if signum == signal.SIGTERM and (signal.SIGTERM in self.pending or signal.SIGTERM in _received):
            return  # a repeated SIGTERM (a launcher forwarding the group's) must not cut the write (see _interrupt)
        if self.pending:  # a second Ctrl-C gets through at once, even while the write is stuck (a dead server)
            self._restore()
            _received.append(signum)
            raise WriteInterrupted(signal.Signals(signum).name)
        self.pending.append(signum)
        again = " (press Ctrl-C again to stop now)" if signum == signal.SIGINT else ""
        # os.write, not sys.stderr: the handler may interrupt the main thread inside a write to sys.stderr
        os.write(2, f"mlp-sweep: {received_name_of(signum)} received during a store write; it stops the run once the "
                    f"write ends{again}\n".encode())

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

