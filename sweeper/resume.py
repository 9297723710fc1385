"""Resume and skip: a relaunched sweep (or single run) reuses every configuration that already FINISHED.

Hydra has no sweep resume and no hook that skips a job, so the task function asks before it creates its run:
``find_finished(client, experiment_id, config_hash)`` returns the newest FINISHED run of the experiment with that
``config_hash`` tag (the hash leaves out tracking, launcher and label keys). The job then logs one line naming that
run, creates no run of its own, and returns the run's ``best/val_loss`` as its objective. Inside a sweep the reused run
gets the tag ``mlp_sweeps.sweep.<sweep_id>`` = <parent run id>, so the new sweep's summary and comparison include it
(``sweeper.summary.child_runs``). FAILED and KILLED runs never count, so those configurations run again;
``tracking.skip_finished=false`` forces a rerun.

Owner tags, written when a run is created, recognise runs left RUNNING by a killed process:

- ``mlp_sweeps.host`` (``socket.gethostname()``), ``mlp_sweeps.pid`` and ``mlp_sweeps.pid_start`` (the process start
  time from /proc, so a recycled pid is not taken for the owner);
- ``mlp_sweeps.heartbeat``: unix seconds, set at creation and refreshed at most every ``HEARTBEAT_SECONDS`` by the
  tracker's metric flushes (with ``log_batch`` it rides along in a call that is written anyway; after a bulk insert
  on sqlite it is one small extra ``log_batch``, at most every ``HEARTBEAT_SECONDS``).

``mark_orphaned_runs`` runs at every launch before any run is created (``on_multirun_start`` for a sweep, the task
function for a single run). A RUNNING run of the experiment is marked KILLED, with the tag ``mlp_sweeps.killed_reason``,
when its owner is on this host and its process is gone, or when it is on another host and its heartbeat is older than
``STALE_HEARTBEAT_SECONDS`` (generous: a live run refreshes it every ~30 s while it trains). Runs whose owner process is
alive, and runs without owner tags (older runs, other tools), are never touched. Their logged metrics stay as they are.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Any

log = logging.getLogger(__name__)

HOST_TAG = "mlp_sweeps.host"
PID_TAG = "mlp_sweeps.pid"
PID_START_TAG = "mlp_sweeps.pid_start"
HEARTBEAT_TAG = "mlp_sweeps.heartbeat"
KILLED_REASON_TAG = "mlp_sweeps.killed_reason"
LINK_TAG_PREFIX = "mlp_sweeps.sweep."  # + sweep_id; value: the parent run id of the sweep that reused the run
HEARTBEAT_SECONDS = 30.0
STALE_HEARTBEAT_SECONDS = 30 * 60.0


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def process_start_time(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat), None where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its closing parenthesis
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].startswith("Z")


def process_alive(pid: int, start_time: str | None = None) -> bool:
    """Is ``pid`` a live process on this host (and, when ``start_time`` is given, the same process that started then)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    if _is_zombie(pid):  # killed but not yet reaped by its parent: it will never write again
        return False
    if start_time is not None:
        current = process_start_time(pid)
        if current is not None and current != start_time:
            return False  # the pid was recycled by another process
    return True


def owner_tags() -> dict[str, str]:
    """Tags naming the process that owns a new run (host, pid, its start time) and a first heartbeat."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), HEARTBEAT_TAG: str(int(time.time()))}
    start = process_start_time(os.getpid())
    if start is not None:
        tags[PID_START_TAG] = start
    return tags


class Heartbeat:
    """``due()`` is True at most once every ``HEARTBEAT_SECONDS``; ``tags()`` then gives the refreshed heartbeat tag."""

    def __init__(self, interval: float = HEARTBEAT_SECONDS):
        self.interval = interval
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.interval

    def tags(self) -> dict[str, str]:
        self.last = time.monotonic()
        return {HEARTBEAT_TAG: str(int(time.time()))}


def orphan_reason(run: Any, host: str | None = None, now: float | None = None) -> str | None:
    """Why the RUNNING ``run`` has no live owner, or None when it may still be alive (or has no owner tags)."""
    host = host or socket.gethostname()
    now = time.time() if now is None else now
    tags = run.data.tags
    owner_host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
    if owner_host is None or pid is None:
        return None
    if owner_host == host:
        try:
            pid_number = int(pid)
        except ValueError:
            return None
        if process_alive(pid_number, tags.get(PID_START_TAG)):
            return None
        return f"owner process {pid} on {host} is gone"
    try:
        beat = float(tags.get(HEARTBEAT_TAG, ""))
    except ValueError:
        return None
    age = now - beat
    if age <= STALE_HEARTBEAT_SECONDS:
        return None
    return f"owner process {pid} on {owner_host}: no heartbeat for {age / 60:.0f} min"


def mark_orphaned_runs(client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED every RUNNING run of the experiment whose owner process is gone; returns their run ids."""
    from mlflow.entities import RunTag

    running = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000,
                                  page_token=token)
        running.extend(page)
        token = page.token
        if not token:
            break
    host, now = socket.gethostname(), time.time()
    marked = []
    for run in running:
        reason = orphan_reason(run, host, now)
        if reason is None:
            continue
        run_id = run.info.run_id
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        # end the run at its last sign of life, not now, so its duration stays meaningful
        try:
            end_ms = max(int(float(run.data.tags.get(HEARTBEAT_TAG, "")) * 1000), run.info.start_time or 0)
        except ValueError:
            end_ms = None
        try:
            client.log_batch(run_id, tags=[RunTag(KILLED_REASON_TAG, f"{reason} (found by pid {os.getpid()} on "
                                                                     f"{host} at {stamp})")])
            client.set_terminated(run_id, "KILLED", end_time=end_ms)
        except Exception as exc:  # housekeeping: never stop a launch over it
            log.warning("could not mark the orphaned run %s KILLED: %s", run_id, exc)
            continue
        log.warning("run %r (%s) was left RUNNING: %s; marked KILLED (its logged metrics are kept)",
                    run.info.run_name, run_id, reason)
        marked.append(run_id)
    return marked


def find_finished(client: Any, experiment_id: str, config_hash: str) -> Any | None:
    """The newest FINISHED run of the experiment tagged with ``config_hash`` (sweep parents carry no such tag)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.config_hash = {_quote(config_hash)} and attributes.status = 'FINISHED'",
        max_results=1, order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def run_link(tracking_uri: str, run: Any) -> str:
    """A UI link for http(s) stores, the run id otherwise (a sqlite file has no address to open)."""
    from .tracking import mask_credentials

    if tracking_uri.startswith(("http://", "https://")):
        base = mask_credentials(tracking_uri).rstrip("/")
        return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    return f"run id {run.info.run_id}"


def objective_of(run: Any) -> float:
    """The reused run's ``best/val_loss`` as the job's objective (inf when it is missing or not finite)."""
    value = run.data.metrics.get("best/val_loss")
    return float(value) if value is not None and math.isfinite(value) else float("inf")


def link_to_sweep(client: Any, run: Any, parent: dict | None) -> None:
    """Tag the reused run with the new sweep, so the sweep's summary and comparison include it."""
    if not parent:
        return
    from mlflow.entities import RunTag

    client.log_batch(run.info.run_id, tags=[RunTag(LINK_TAG_PREFIX + parent["sweep_id"], parent["run_id"])])


def linked_filter(sweep_id: str, parent_run_id: str) -> str:
    """Filter string for the runs a sweep reused instead of rerunning them."""
    return f"tags.`{LINK_TAG_PREFIX}{sweep_id}` = {_quote(parent_run_id)}"
