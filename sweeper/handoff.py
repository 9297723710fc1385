"""The files a sweep hands its jobs, in ``hydra.sweep.dir``: the only way a launching process talks to its jobs,
which may run in the same process (basic launcher), in joblib workers or in Slurm jobs on other hosts.

- ``names.PARENT_FILE``: the sweep's MLflow parent run (written by the sweep callback, read by every job).
- ``names.SEARCH_FILE``: a search's study and the trial number of each job number (written by the search sweeper
  before each batch, read by its jobs, ``sweeper.sweep.trial``).
- ``names.CONFIRM_FILE``: the confirm sweeper's outcome (written by it after its last look, read by the summary).
- ``.swept.json``: the keys the sweep varies (``config.identity.swept_keys``), which lead its runs' names (written by
  the sweep callback before any job).
- ``.progress/``: the sweep's size and each job's outcome, from which every job logs the k/N progress line.
- ``.curves/``: a job's request for its run's curve figure (``job-<hydra.job.num>.json``), which the sweep's drawer
  process draws between the next jobs' fits (``sweeper.reporting.drawer``); ``training-<pid>-<n>@<host>``, present
  while a process of this sweep fits (the drawer waits while one on its host is alive); and ``.end``, written when the
  sweep ends.

Every file is written atomically (by rename), so a reader sees the old or the new content, never half of it.

Sweep progress as plain log lines: ``3/4 done, 1 reused, 0 failed, ETA 0:00:12`` after every job. No process holds a
counter the others could update: the launcher writes ``.progress/sweep.json`` (the number of jobs N and the start
time) before any job starts, and each job, when it ends, writes its own ``.progress/job-<hydra.job.num>.json`` and
then counts the files. Nothing is locked or incremented, so parallel workers cannot lose an update; two jobs ending at
the same moment may both report the same k, which was true when each of them looked. A requeued job rewrites its own
file rather than counting twice.

ETA = mean time of the jobs trained so far × jobs left / jobs running at once, the last measured from the job files
(their summed durations over the wall time they span), so it holds for a serial sweep and for parallel workers.

The log lines reach the job's log file, joblib's and Slurm's output; in a terminal the launching process also shows a
sweep-level bar above the per-run bar.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import names
from .redact import mask_credentials

log = logging.getLogger(__name__)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------------------- the parent run

def uri_digest(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()


def write_parent(sweep_dir: str | Path, run_id: str, experiment_id: str, sweep_id: str, uri: str) -> None:
    """Hand the sweep's parent run to its jobs. The URI itself may hold credentials: the file keeps a masked copy and
    a digest the jobs compare with theirs."""
    _write_json(Path(sweep_dir) / names.PARENT_FILE,
                {"run_id": run_id, "experiment_id": experiment_id, names.SWEEP_ID: sweep_id,
                 "tracking_uri": mask_credentials(uri), "tracking_uri_sha256": uri_digest(uri)})


def read_parent(sweep_dir: str | Path) -> dict | None:
    """The parent-run handoff of ``write_parent``, or None outside a tracked sweep."""
    return _read_json(Path(sweep_dir) / names.PARENT_FILE)


def parent_in(sweep_dir: str | Path, uri: str) -> dict | None:
    """The sweep's parent run when it lives in the store at ``uri``: a job that logs to another store than the
    parent's (tracking.uri was swept) has no parent."""
    parent = read_parent(sweep_dir)
    return parent if parent is not None and parent["tracking_uri_sha256"] == uri_digest(uri) else None


# ---------------------------------------------------------------------------------------------------- swept keys

SWEPT_FILE = ".swept.json"


def write_swept(sweep_dir: str | Path, keys: list[str]) -> None:
    """The keys the sweep varies: its jobs' run names lead with their values."""
    _write_json(Path(sweep_dir) / SWEPT_FILE, {"keys": keys})


def read_swept(sweep_dir: str | Path) -> list[str]:
    """The keys of ``write_swept``; none outside a sweep started by our callback."""
    found = _read_json(Path(sweep_dir) / SWEPT_FILE)
    return list(found["keys"]) if found else []


# ---------------------------------------------------------------------------------------------------- curve figures

# a run's history.csv, which its job writes (``lifecycle.write_artifacts``) and the drawer reads: one row per step of
# ``mlp_core.FitResult.history_rows``, the validation columns filled on the rows of validation points
HISTORY_STEP, HISTORY_TRAIN_LOSS, HISTORY_TRAIN_ACCURACY = "step", "train_loss", "train_accuracy"
HISTORY_VAL_LOSS, HISTORY_VAL_ACCURACY = "val_loss", "val_accuracy"
HISTORY_COLUMNS = (HISTORY_STEP, HISTORY_TRAIN_LOSS, HISTORY_TRAIN_ACCURACY, HISTORY_VAL_LOSS, HISTORY_VAL_ACCURACY)
CURVES_DIR = ".curves"
CURVES_END = ".end"
TRAINING_PREFIX = "training-"  # + <pid>-<n>@<host>: a fit in progress (``drawer.marked_fit``)
DRAWER_READY_PREFIX = "drawer-ready-"  # + the drawer's pid: written once it may be stopped (``drawer.fitting``)


def open_curves(sweep_dir: str | Path) -> Path:
    """Called by the launching process before any job: the folder of curve requests, emptied of an earlier launch's
    requests and end mark (a relaunch into the same sweep dir)."""
    folder = Path(sweep_dir) / CURVES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("job-*.json"), *folder.glob(f"{TRAINING_PREFIX}*"),
                  *folder.glob(f"{DRAWER_READY_PREFIX}*"), folder / CURVES_END]:
        stale.unlink(missing_ok=True)
    return folder


def curves_open(sweep_dir: str | Path) -> bool:
    """Whether the sweep takes curve requests: its launcher opened the folder and the sweep has not ended."""
    folder = Path(sweep_dir) / CURVES_DIR
    return folder.is_dir() and not (folder / CURVES_END).exists()


def request_curves(sweep_dir: str | Path, job_num: int, run_id: str | None, history: Path, png: Path,
                   title: str) -> bool:
    """Ask the sweep's drawer for the curve figure ``png`` of ``history`` (history.csv); False when the request could
    not be written (the job then draws the figure itself)."""
    try:
        _write_json(Path(sweep_dir) / CURVES_DIR / f"job-{job_num}.json",
                    {"run_id": run_id, "history": str(history), "png": str(png), "title": title})
    except OSError as exc:
        log.warning("could not hand the curve figure %s to the sweep's drawer: %s", png, exc)
        return False
    return True


def curve_requests(sweep_dir: str | Path) -> dict[str, dict]:
    """{request file name: request} of the sweep, in job order."""
    found = {}
    for path in (Path(sweep_dir) / CURVES_DIR).glob("job-*.json"):
        request = _read_json(path)
        if request is not None:
            found[path.name] = request
    return dict(sorted(found.items(), key=lambda item: int(item[0][4:-5])))


def end_curves(sweep_dir: str | Path) -> None:
    """Tell the drawer that no request will come any more."""
    (Path(sweep_dir) / CURVES_DIR / CURVES_END).touch()


def curves_ended(sweep_dir: str | Path) -> bool:
    return (Path(sweep_dir) / CURVES_DIR / CURVES_END).exists()


# ---------------------------------------------------------------------------------------------------- the search

def write_search(sweep_dir: str | Path, info: dict) -> None:
    """The study and the trial number of each job number of the next batch (``info["trials"]``)."""
    _write_json(Path(sweep_dir) / names.SEARCH_FILE, info)


def read_search(sweep_dir: str | Path) -> dict | None:
    """What the jobs of a search read (``write_search``), or None outside a search."""
    return _read_json(Path(sweep_dir) / names.SEARCH_FILE)


def write_confirmation(sweep_dir: str | Path, result: dict) -> None:
    """The confirm sweeper's outcome (its plan, every look, the sentence), for the sweep's summary."""
    _write_json(Path(sweep_dir) / names.CONFIRM_FILE, result)


def read_confirmation(sweep_dir: str | Path) -> dict | None:
    """``write_confirmation``'s outcome, or None for a sweep of another sweeper."""
    return _read_json(Path(sweep_dir) / names.CONFIRM_FILE)


# ---------------------------------------------------------------------------------------------------- progress

PROGRESS_DIR = ".progress"
SWEEP_FILE = "sweep.json"
OUTCOMES = ("done", "reused", "failed")

_bar: Any = None  # the sweep-level tqdm bar of the launching process (terminal only)


@dataclass(frozen=True)
class Progress:
    """What the job files of a sweep say at one moment."""

    done: int          # jobs ended, whatever their outcome (k)
    total: int | None  # jobs in the sweep (N), None when the sweeper does not say
    reused: int
    failed: int
    eta_seconds: float | None

    def line(self) -> str:
        total = "?" if self.total is None else str(self.total)
        eta = "ETA " + format_seconds(self.eta_seconds) if self.eta_seconds is not None else "ETA unknown"
        if self.total is not None and self.done >= self.total:
            eta = "all jobs ended"
        return f"{self.done}/{total} done, {self.reused} reused, {self.failed} failed, {eta}"


def format_seconds(seconds: float) -> str:
    """``0:00:12``, ``1:02:03``, ``2 days, 3:00:00``."""
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days} day{'s' if days > 1 else ''}, {text}" if days else text


def start(sweep_dir: str | Path, total: int | None) -> None:
    """Called by the launching process before any job: the sweep's size (and who launched it). The job files of an
    earlier launch into the same sweep dir go: the count is this launch's (none of its jobs has ended yet)."""
    for path in (Path(sweep_dir) / PROGRESS_DIR).glob("job-*.json"):
        path.unlink(missing_ok=True)
    _write_json(Path(sweep_dir) / PROGRESS_DIR / SWEEP_FILE, {"total": total, "launcher_pid": os.getpid()})


def extend(sweep_dir: str | Path, total: int) -> None:
    """The sweep grew to ``total`` jobs (the confirm sweeper's added seeds); the jobs' records so far stay."""
    info = _sweep_info(Path(sweep_dir))
    if info is not None:
        _write_json(Path(sweep_dir) / PROGRESS_DIR / SWEEP_FILE, {**info, "total": total})


def _sweep_info(sweep_dir: Path) -> dict | None:
    try:
        return json.loads((sweep_dir / PROGRESS_DIR / SWEEP_FILE).read_text())
    except (OSError, ValueError):
        return None


def read(sweep_dir: str | Path) -> Progress | None:
    """The sweep's progress from its files; None outside a sweep started by our callback."""
    sweep_dir = Path(sweep_dir)
    info = _sweep_info(sweep_dir)
    if info is None:
        return None
    jobs = []
    for path in (sweep_dir / PROGRESS_DIR).glob("job-*.json"):
        try:
            jobs.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # a file being replaced right now is read again by the next job
            continue
    counts = {outcome: sum(j.get("outcome") == outcome for j in jobs) for outcome in OUTCOMES}
    total = info.get("total")
    return Progress(done=len(jobs), total=total, reused=counts["reused"], failed=counts["failed"],
                    eta_seconds=_eta(jobs, total))


def _eta(jobs: list[dict], total: int | None) -> float | None:
    """Mean duration of the jobs that trained × jobs left / jobs running at once. How many run at once is measured:
    the jobs' summed durations over the wall time from the first start to the last end (1 for a serial sweep, about
    n for n busy workers); reused jobs, which take almost no time, are left out of the mean."""
    trained = [float(j["seconds"]) for j in jobs if j.get("outcome") != "reused"]
    if total is None or not trained:
        return None
    span = max(float(j["ended"]) for j in jobs) - min(float(j["ended"]) - float(j["seconds"]) for j in jobs)
    busy = sum(float(j["seconds"]) for j in jobs)
    workers = max(1.0, busy / span) if span > 0 else 1.0
    eta = sum(trained) / len(trained) * max(total - len(jobs), 0) / workers
    return eta if math.isfinite(eta) else None


def record(sweep_dir: str | Path, job_num: int, outcome: str, seconds: float,
           now: float | None = None, run_id: str | None = None) -> Progress | None:
    """Write this job's outcome (and its `seconds`, ending `now`, the wall clock by default; a reused job's `run_id`,
    the earlier run it stands for), log the sweep's progress line and move the sweep bar; returns what was logged."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown job outcome {outcome!r}; valid: {', '.join(OUTCOMES)}")
    sweep_dir = Path(sweep_dir)
    if _sweep_info(sweep_dir) is None:
        return None
    try:
        _write_json(sweep_dir / PROGRESS_DIR / f"job-{job_num}.json",
                    {"outcome": outcome, "seconds": seconds, "ended": time.time() if now is None else now,
                     "run_id": run_id})
    except OSError as exc:  # progress is a convenience: never fail (or hide the error of) a job over it
        log.warning("could not record the sweep's progress in %s: %s", sweep_dir, exc)
        return None
    progress = read(sweep_dir)
    if progress is not None:
        log.info("sweep progress: %s", progress.line())
        if _bar is not None:
            _bar.n = progress.done
            _bar.set_postfix_str(f"{progress.reused} reused, {progress.failed} failed")
            _bar.refresh()
    return progress


def reused_job_numbers(sweep_dir: str | Path) -> dict[str, int]:
    """{run id: job number} of the runs this sweep's jobs reused: their place in this launch's grid (the run's own
    job number is the one it had in the launch that trained it)."""
    found = {}
    for path in (Path(sweep_dir) / PROGRESS_DIR).glob("job-*.json"):
        try:
            run_id = json.loads(path.read_text()).get("run_id")
        except (OSError, ValueError):
            continue
        if run_id:
            found[run_id] = int(path.stem[4:])
    return found


@dataclass
class JobOutcome:
    reused: bool = False
    run_id: str | None = None  # the earlier run a reused job stands for


@contextlib.contextmanager
def job_outcome(hydra_cfg: Any) -> Iterator[JobOutcome]:
    """Around one job of a sweep (``hydra_cfg``: its HydraConfig; None outside a sweep, which records nothing):
    records it done, reused (set ``.reused``) or failed; an interrupted job records nothing."""
    outcome = JobOutcome()
    if hydra_cfg is None:
        yield outcome
        return
    sweep_dir, job_num, started = hydra_cfg.sweep.dir, hydra_cfg.job.num, time.monotonic()
    open_bar(sweep_dir)
    try:
        yield outcome
    except Exception:
        record(sweep_dir, job_num, "failed", time.monotonic() - started)
        raise
    record(sweep_dir, job_num, "reused" if outcome.reused else "done", time.monotonic() - started,
           run_id=outcome.run_id if outcome.reused else None)


def open_bar(sweep_dir: str | Path) -> None:
    """In a terminal, in the launching process (the basic launcher runs the jobs there), show the sweep-level bar
    once; it stays above each job's own bar (see `run_bar_position`)."""
    global _bar
    info = _sweep_info(Path(sweep_dir))
    if _bar is not None or info is None or info.get("launcher_pid") != os.getpid() or not sys.stderr.isatty():
        return
    from tqdm.auto import tqdm

    progress = read(sweep_dir)
    _bar = tqdm(total=info.get("total"), initial=progress.done if progress else 0, desc="sweep", unit="job",
                position=0, dynamic_ncols=True, leave=True)


def run_bar_position() -> int:
    """Where a job's own bar goes: below the sweep bar when there is one."""
    return 0 if _bar is None else 1


def close_bar() -> None:
    global _bar
    if _bar is not None:
        _bar.close()
        _bar = None
