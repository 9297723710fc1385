"""The curve figures of a sweep's runs, drawn off the jobs' path: one drawer process per sweep.

A job of a sweep writes its history.csv and a request in the sweep dir (``sweeper.handoff.request_curves``) instead
of drawing curves.png itself. ``CurveDrawer.start`` (the sweep callback, before any job) starts
``python -m sweeper.reporting.drawer <sweep_dir>``, which imports matplotlib once and draws each request's figure
while the next jobs train. ``CurveDrawer.finish`` (the sweep's end) marks the end, waits for the drawer, draws here
whatever it left undrawn (it died, timed out or never started) and logs every figure as an artifact of its run.
docs/decisions.md says why a process, what it costs and why the figure is the same.
"""
from __future__ import annotations

import contextlib
import csv
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import handoff
from .history import RunHistory

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # between looks at the request folder: a figure waits at most this long for the drawer
GAP_POLL_SECONDS = 0.02  # between looks for the end of a fit (``training_now``)
LOG_FILE = "drawer.log"  # the drawer's stderr, in the request folder
PR_SET_PDEATHSIG = 1  # linux/prctl.h

_started: dict[str, subprocess.Popen] = {}  # sweep dir -> the drawer this process started and has not reaped


def history_from_csv(path: str | Path) -> RunHistory:
    """The curves of a run's history.csv (its columns: ``handoff.HISTORY_COLUMNS``), with the values FitResult held:
    the csv keeps each float's repr."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    points = [row for row in rows if row[handoff.HISTORY_VAL_LOSS] != ""]

    def column(selected: list[dict], key: str) -> np.ndarray:
        return np.array([float(row[key]) for row in selected], dtype=np.float64)

    return RunHistory(train_loss=column(rows, handoff.HISTORY_TRAIN_LOSS),
                      val_steps=np.array([int(row[handoff.HISTORY_STEP]) for row in points], dtype=np.int64),
                      val_loss=column(points, handoff.HISTORY_VAL_LOSS),
                      val_accuracy=column(points, handoff.HISTORY_VAL_ACCURACY),
                      train_accuracy=column(points, handoff.HISTORY_TRAIN_ACCURACY))


def draw_request(request: dict) -> Path:
    """Draw one request's figure (the run's own ``plot_curves``, same title) and put it in place by rename, so a
    reader never sees half a PNG."""
    from .plots import plot_curves  # matplotlib: only in the drawer, or at the sweep's end

    png = Path(request["png"])
    tmp = png.with_name(f"{png.name}.{os.getpid()}.tmp")
    plot_curves(history_from_csv(request["history"]), tmp, request["title"])
    tmp.replace(png)
    return png


def is_drawn(request: dict) -> bool:
    """The request's PNG exists and is not older than its history (an earlier launch's figure in a reused job dir)."""
    png, history = Path(request["png"]), Path(request["history"])
    return png.is_file() and (not history.is_file() or png.stat().st_mtime_ns >= history.stat().st_mtime_ns)


def serve(sweep_dir: Path, launcher: int, poll_seconds: float = POLL_SECONDS) -> None:
    """The drawer's loop: draw each new request until the sweep has ended and every request is drawn, or until the
    launching process (pid ``launcher``) is gone: this process is then re-parented, so it never outlives its sweep.
    The pid comes from the launcher, since a launcher that died before this process looked would go unnoticed."""
    handled: dict[str, int] = {}  # request file -> its mtime when drawn (a requeued job rewrites its request)
    while True:
        ended = handoff.curves_ended(sweep_dir)  # before listing: a request written before the end mark is seen
        folder = sweep_dir / handoff.CURVES_DIR
        pending = {name: request for name, request in handoff.curve_requests(sweep_dir).items()
                   if handled.get(name) != (folder / name).stat().st_mtime_ns}
        for name, request in pending.items():
            if not wait_for_gap(sweep_dir, launcher):
                return
            handled[name] = (folder / name).stat().st_mtime_ns
            try:
                log.info("drew %s", draw_request(request))
            except Exception as exc:  # noqa: BLE001 - one bad history must not stop the others' figures
                log.warning("could not draw %s: %s", request["png"], exc)
        if (ended and not pending) or os.getppid() != launcher:
            return
        if not pending:
            time.sleep(poll_seconds)


def wait_for_gap(sweep_dir: Path, launcher: int, poll_seconds: float = GAP_POLL_SECONDS) -> bool:
    """Wait until no process of the sweep fits on this host (``training_now``), or the sweep has ended;
    False when the launching process is gone. A figure drawn beside a fit slows the fit more than it costs to draw:
    at nice 19 the drawer still took the cycles a fit's BLAS threads left between their steps, and 16 task3c fits of
    a basic sweep took 0.48 s each instead of 0.33 s. Between fits (a job's store calls, the next job's set-up) the
    other core is idle, and what is left is drawn while the sweep writes its report."""
    while not handoff.curves_ended(sweep_dir) and training_now(sweep_dir):
        if os.getppid() != launcher:
            return False
        time.sleep(poll_seconds)
    return os.getppid() == launcher


_training_marks = itertools.count()


@contextlib.contextmanager
def marked_fit(sweep_dir: str | Path | None) -> Iterator[None]:
    """Mark this process as fitting while the block runs (``.curves/training-<pid>-<n>@<host>``), so that the sweep's
    drawer draws between fits rather than beside them. Nothing when ``sweep_dir`` is None or the mark cannot be
    written: the figure is then only drawn beside the fit."""
    path = None
    if sweep_dir is not None:
        path = (Path(sweep_dir) / handoff.CURVES_DIR
                / f"{handoff.TRAINING_PREFIX}{os.getpid()}-{next(_training_marks)}@{socket.gethostname()}")
        try:
            path.touch()
        except OSError:
            path = None
    try:
        yield
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


def training_now(sweep_dir: str | Path) -> bool:
    """Whether a live process on this host is fitting a job of the sweep (``marked_fit``). The mark of a process that
    is gone (killed mid-fit) is removed; a mark from another host (a Slurm job) does not count: it trains on other
    cores."""
    host = socket.gethostname()
    for path in (Path(sweep_dir) / handoff.CURVES_DIR).glob(f"{handoff.TRAINING_PREFIX}*"):
        owner, _, mark_host = path.name[len(handoff.TRAINING_PREFIX):].partition("@")
        if mark_host != host:
            continue
        try:
            os.kill(int(owner.partition("-")[0]), 0)
        except ValueError:  # not a mark of ours
            continue
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            continue
        except PermissionError:  # another user's live process
            pass
        return True
    return False


@contextlib.contextmanager
def fitting(sweep_dir: Path | None) -> Iterator[None]:
    """Around a job's fit: the sweep's drawer draws no figure meanwhile. Every process marks its fit
    (``marked_fit``), so the drawer starts no figure; the launching process, which started the drawer and so
    knows its pid for sure (an unreaped child's pid is never reused), also stops it for the fit (SIGSTOP, then
    SIGCONT), so that a figure begun just before the fit waits too. A drawer stopped when its launcher dies is
    continued by the kernel (``PR_SET_PDEATHSIG``, set by the drawer), and then exits."""
    process = _started.get(str(sweep_dir)) if sweep_dir is not None else None
    with marked_fit(sweep_dir):
        if process is None or not _ready(Path(sweep_dir), process.pid) or not _signal(process, signal.SIGSTOP):
            yield
            return
        try:
            yield
        finally:
            _signal(process, signal.SIGCONT)


def _ready(sweep_dir: Path, pid: int) -> bool:
    """Whether the drawer has set its parent-death signal (``main``): before that, a stop could outlive a killed
    launcher."""
    return (sweep_dir / handoff.CURVES_DIR / f"{handoff.DRAWER_READY_PREFIX}{pid}").exists()


def _signal(process: subprocess.Popen, signum: int) -> bool:
    try:
        if process.poll() is not None:
            return False
        process.send_signal(signum)
    except OSError:
        return False
    return True


@dataclass
class CurveDrawer:
    """The launching process's handle on the sweep's drawer process (None when it could not start)."""

    sweep_dir: Path
    process: subprocess.Popen | None

    @classmethod
    def start(cls, sweep_dir: Path) -> CurveDrawer:
        """Open the request folder and start the drawer in its own session: a Ctrl-C to the terminal reaches the
        launcher, which ends the drawer in order, and not the drawer in the middle of a PNG."""
        folder = handoff.open_curves(sweep_dir)
        try:
            with (folder / LOG_FILE).open("ab") as stderr:
                process = subprocess.Popen([sys.executable, "-m", __name__, str(sweep_dir), str(os.getpid())],
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                           start_new_session=True)
        except OSError as exc:
            log.warning("could not start the curve drawer (%s): the runs' curves.png are drawn when the sweep ends",
                        exc)
            process = None
        if process is not None:
            _started[str(sweep_dir)] = process
        return cls(sweep_dir, process)

    def ready(self) -> bool:
        """Whether the launcher may stop the drawer for a fit (``fitting``)."""
        return self.process is not None and _ready(self.sweep_dir, self.process.pid)

    def __getstate__(self) -> dict:
        # joblib and the population launcher pickle the sweep callback, and this handle with it, for their workers:
        # a Popen does not pickle, and only the launching process waits for its drawer
        return {"sweep_dir": self.sweep_dir, "process": None}

    def finish(self, client: Any, wait_seconds: float) -> None:
        """End of the sweep: wait up to ``wait_seconds`` for the drawer, draw what it left, then log each figure to
        its run with ``client`` (None: the sweep is not tracked). A run may have FINISHED already: MLflow still
        takes its artifacts."""
        handoff.end_curves(self.sweep_dir)
        if self.process is not None:
            _started.pop(str(self.sweep_dir), None)
            _signal(self.process, signal.SIGCONT)  # never stopped here (``fitting`` continues it), but never wait on it
            try:
                self.process.wait(wait_seconds)
            except subprocess.TimeoutExpired:
                log.warning("the curve drawer (pid %d) did not finish within %.0f s: the rest is drawn here",
                            self.process.pid, wait_seconds)
                self.process.kill()
                self.process.wait()
        requests = list(handoff.curve_requests(self.sweep_dir).values())
        for request in requests:
            if not is_drawn(request):
                try:
                    draw_request(request)
                except Exception as exc:  # noqa: BLE001 - a figure is a convenience: never fail the sweep over it
                    log.warning("could not draw %s: %s", request["png"], exc)
        if client is not None:
            _log_figures(client, [r for r in requests if r["run_id"] and Path(r["png"]).is_file()])


def _log_figures(client: Any, requests: list[dict]) -> None:
    failed = []
    for request in requests:
        try:
            client.log_artifact(request["run_id"], request["png"])
        except Exception as exc:  # noqa: BLE001 - the figure stays in the job's dir: report once, go on
            failed.append((request["run_id"], exc))
    if failed:
        log.warning("could not log curves.png to %d of %d runs (first: run %s: %s); each figure stays in its job's "
                    "output dir", len(failed), len(requests), failed[0][0], failed[0][1])


def main(argv: list[str] | None = None) -> None:
    """``python -m sweeper.reporting.drawer SWEEP_DIR LAUNCHER_PID``: the drawer process (``CurveDrawer.start``)."""
    sweep_dir, launcher = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(message)s")
    # The lowest priority, and only between fits (wait_for_gap): at the same priority, a figure drawn while a job
    # trains with 2 BLAS threads on 2 cores made that job's fit 3-4x slower (0.45 -> 1.3-1.8 s for task3c: a
    # descheduled BLAS thread keeps the other spinning); at nice 19 still about 1.5x (docs/decisions.md).
    os.nice(19)
    if _continue_when_orphaned():
        (Path(sweep_dir) / handoff.CURVES_DIR / f"{handoff.DRAWER_READY_PREFIX}{os.getpid()}").touch()
    serve(Path(sweep_dir), int(launcher))


def _continue_when_orphaned() -> bool:
    """If the launcher dies (even by SIGKILL) while this process is stopped for a fit (``fitting``), the kernel sends
    SIGCONT; ``serve`` then sees the new parent and returns. False where that cannot be set (not Linux): the launcher
    then never stops this process, and only the marks keep figures out of the fits."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGCONT), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


if __name__ == "__main__":
    main()
