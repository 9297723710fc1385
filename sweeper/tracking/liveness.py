"""Who owns a RUNNING run, and whether it is still alive: owner tags, the heartbeat, and marking orphans KILLED.

Every run records its owner when it is created: host, pid and the pid's start time (so a recycled pid is not taken for
the owner), plus a heartbeat (unix seconds) that the tracker's metric flushes refresh at most every
``HEARTBEAT_SECONDS``. ``mark_orphaned_runs`` runs at every launch before any run is created: a RUNNING run whose owner
process on this host is gone, or whose heartbeat from another host is older than ``STALE_HEARTBEAT_SECONDS``, is
marked KILLED with a reason tag; its metrics stay. Runs of live processes and runs without owner tags (older runs,
other tools) are never touched.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from .. import names
from .queries import search_all_runs, status_is

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0
STALE_HEARTBEAT_SECONDS = 30 * 60.0


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


def owner_tags(heartbeat: bool = True) -> dict[str, str]:
    """Tags naming the process that owns a new run (host, pid, its start time) and, unless told not to, a heartbeat."""
    tags = {names.HOST: socket.gethostname(), names.PID: str(os.getpid())}
    if heartbeat:
        tags[names.HEARTBEAT] = str(int(time.time()))
    start = process_start_time(os.getpid())
    if start is not None:
        tags[names.PID_START] = start
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
        return {names.HEARTBEAT: str(int(time.time()))}


def orphan_reason(run: Any, host: str | None = None, now: float | None = None) -> str | None:
    """Why the RUNNING ``run`` has no live owner, or None when it may still be alive (or has no owner tags)."""
    return owner_gone(run.data.tags, host, now)


def owner_gone(tags: dict[str, str], host: str | None = None, now: float | None = None) -> str | None:
    """Why the owner that ``tags`` (of ``owner_tags``) name is gone, or None when it may still be alive."""
    host = host or socket.gethostname()
    now = time.time() if now is None else now
    owner_host, pid = tags.get(names.HOST), tags.get(names.PID)
    if owner_host is None or pid is None:
        return None
    if owner_host == host:
        try:
            pid_number = int(pid)
        except ValueError:
            return None
        if process_alive(pid_number, tags.get(names.PID_START)):
            return None
        return f"owner process {pid} on {host} is gone"
    try:
        beat = float(tags.get(names.HEARTBEAT, ""))
    except ValueError:
        return None
    age = now - beat
    if age <= STALE_HEARTBEAT_SECONDS:
        return None
    return f"owner process {pid} on {owner_host}: no heartbeat for {age / 60:.0f} min"


def mark_orphaned_runs(client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED every RUNNING run of the experiment whose owner process is gone; returns their run ids."""
    running = search_all_runs(client, [experiment_id], status_is("RUNNING"))
    host, now = socket.gethostname(), time.time()
    marked = []
    for run in running:
        reason = orphan_reason(run, host, now)
        if reason is not None and kill_orphan(client, run, reason):
            marked.append(run.info.run_id)
    return marked


def kill_orphan(client: Any, run: Any, reason: str) -> bool:
    """Mark the RUNNING ``run`` KILLED with ``reason`` (its metrics stay); False (with a warning) if that failed."""
    from mlflow.entities import RunTag

    run_id, host = run.info.run_id, socket.gethostname()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    # end the run at its last sign of life, not now, so its duration stays meaningful
    try:
        end_ms = max(int(float(run.data.tags.get(names.HEARTBEAT, "")) * 1000), run.info.start_time or 0)
    except ValueError:
        end_ms = None
    try:
        client.log_batch(run_id, tags=[RunTag(names.KILLED_REASON, f"{reason} (found by pid {os.getpid()} on "
                                                                   f"{host} at {stamp})")])
        client.set_terminated(run_id, "KILLED", end_time=end_ms)
    except Exception as exc:  # housekeeping: never stop a launch over it
        log.warning("could not mark the orphaned run %s KILLED: %s", run_id, exc)
        return False
    log.warning("run %r (%s) was left RUNNING: %s; marked KILLED (its logged metrics are kept)",
                run.info.run_name, run_id, reason)
    return True
