"""Claims: any number of concurrent launches on one store train each configuration once.

A job claims its config before it trains: the claim is the job's own run, created RUNNING with its ``config_hash`` tag,
its owner tags (``liveness``) and a ticket. Who may train is decided by Lamport's bakery algorithm over these runs, a
protocol that needs no transaction, only that each store call is atomic and that a read sees every write that
completed before it started. That holds alike for a sqlite file (each call is one transaction) and through an
``mlflow server`` over HTTP (each request commits before it answers), so both use the same code and only MLflow's
public API:

1. doorway: create the run with ticket ``pending`` (one atomic ``create_run`` with its tags); read the live RUNNING
   claims of the hash; set my ticket to 1 + the largest ticket read.
2. wait while another live claim is still ``pending``, or holds a smaller (ticket, run id) than mine. Meanwhile the
   job reports the config as "running elsewhere", naming and linking the run that holds it.
3. first in line: if a FINISHED run of the config exists (the holder finished while I waited), withdraw my claim (it is
   ended KILLED and deleted) and reuse that run; otherwise train in my run, which ends FINISHED, KILLED or FAILED and
   so leaves the line. Each look in step 2 is one search for every run of the hash (``read_line``), so the look that
   finds nobody ahead has also seen any FINISHED run: an uncontended claim is four store calls (create, read, ticket,
   read).

Why no two claims train at once: let A and B both be first in line. Each read the other's claim in step 2 unless it was
created later. If B was created after A's step-2 read, it was created after A's ticket was written, so B's step-1 read
saw A's ticket and B's is larger: B waits. Otherwise each saw the other with a numbered ticket (the pending wait) and
(ticket, run id) orders them the same way for both: one waits. Why a config never trains after it FINISHED: the holder
ends FINISHED in one write; a claim that sees it no longer RUNNING reads the FINISHED runs after that, so it finds it.
A plain "create, then the oldest claim wins" is not enough: a claim whose read missed a later one, which has an older
start time (clocks differ; start times are set by each client), would train beside it.

Groups (a population claims all its members' configs before it trains them in one pass): a job that holds claims
while it waits for another would deadlock with a second group that claimed the same configs in another order, each
holding what the other waits for, and nothing would ever time out. So a group claims its configs one at a time in
ascending ``config_hash`` order (``sweeper.sweep.population``), never in launch order. Then no cycle of waits can
form: a job waits only for a claim ahead of it on the one hash it is claiming, and the holder of that claim either
trains (it waits for nothing) or is itself claiming a strictly larger hash; following the waits, the hashes grow, so
the chain ends at a job that trains, which ends its runs and lets the next in line go. A solo job holds one claim and
waits for nothing while it trains, so it fits the same argument. A member that waits while its group holds claims
is still alive; an interrupt there ends every claim the group holds KILLED.

Dead owners: a claim whose owner process is gone (or, from another host, whose heartbeat is stale, see ``liveness``)
is marked KILLED by whoever reads it, so the next in line takes over. A waiting claim refreshes its heartbeat. Runs
with the hash but no ticket (older releases, ``tracking.skip_finished=false``) count as ticket 0: they already train.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .. import names
from .liveness import Heartbeat, kill_orphan, orphan_reason
from .queries import all_of, search_all_runs, status_is, tag_equals
from .resume import run_link

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


@dataclass
class Claim:
    """The outcome of ``acquire``: ``run_id`` to train in, or a FINISHED ``reused`` run (then ``run_id`` is None)."""

    run_id: str | None = None
    reused: Any = None
    waited_for: Any = None  # the run this job waited for, if any


def ticket_of(run: Any) -> int | None:
    """A claim's ticket; None while it is pending; 0 for a RUNNING run of the hash without one (it already trains)."""
    value = run.data.tags.get(names.CLAIM_TICKET)
    if value is None:
        return 0
    if value == names.CLAIM_PENDING:
        return None
    try:
        return int(value)
    except ValueError:
        return 0


def live_claims(client: Any, experiment_id: str, config_hash: str, mine: str | None = None) -> list[Any]:
    """The RUNNING runs of ``config_hash`` whose owner is alive; dead owners' claims are marked KILLED on the way,
    and so are stale claims of this very process other than ``mine`` (a create whose answer was lost and retried)."""
    runs = search_all_runs(client, [experiment_id], all_of(tag_equals(names.CONFIG_HASH, config_hash),
                                                            status_is("RUNNING")))
    return _alive(client, runs, mine)


def read_line(client: Any, experiment_id: str, config_hash: str, mine: str) -> tuple[list[Any], Any | None]:
    """One read of every run of ``config_hash``: (its live claims, as ``live_claims`` gives them; its newest FINISHED
    run or None). One search instead of two: the same snapshot tells whether a holder ahead is still RUNNING or has
    FINISHED, which is all the end of the wait needs (module docstring)."""
    runs = search_all_runs(client, [experiment_id], tag_equals(names.CONFIG_HASH, config_hash))
    finished = [r for r in runs if r.info.status == "FINISHED"]
    newest = max(finished, key=lambda r: r.info.start_time or 0, default=None)
    return _alive(client, [r for r in runs if r.info.status == "RUNNING"], mine), newest


def _alive(client: Any, runs: list[Any], mine: str | None) -> list[Any]:
    host, now, pid = socket.gethostname(), time.time(), str(os.getpid())
    live = []
    for run in runs:
        tags = run.data.tags
        reason = orphan_reason(run, host, now)
        if reason is None and mine is not None and run.info.run_id != mine and tags.get(names.HOST) == host \
                and tags.get(names.PID) == pid:
            reason = f"a stale claim of process {pid} on {host}, which now holds run {mine}"
        if reason is None:
            live.append(run)
        else:
            kill_orphan(client, run, reason)
    return live


def _position(run: Any) -> tuple[int, str]:
    return ticket_of(run) or 0, run.info.run_id


def acquire(client: Any, experiment_id: str, run_name: str, tags: dict[str, str], config_hash: str,
            tracking_uri: str = "", poll: float = POLL_SECONDS, sleep: Callable[[float], None] = time.sleep) -> Claim:
    """Claim the config of ``config_hash``; see the module docstring. ``tags`` are the new run's tags (owner tags
    included). Any error or interrupt withdraws the claim. The caller has looked for a FINISHED run of the config, under
    older releases' hashes too (``sweeper.job.reuse_finished``): those releases never claim, so nothing they do can be
    ordered by the wait, which only looks for FINISHED runs of ``config_hash``."""
    run = client.create_run(experiment_id, run_name=run_name, tags={**tags, names.CLAIM_TICKET: names.CLAIM_PENDING})
    mine = run.info.run_id
    try:
        claims = live_claims(client, experiment_id, config_hash, mine)
        ticket = 1 + max((ticket_of(c) or 0 for c in claims if c.info.run_id != mine), default=0)
        set_tags(client, mine, {names.CLAIM_TICKET: str(ticket)})
        return _wait_in_line(client, experiment_id, mine, (ticket, mine), config_hash, run_name, tracking_uri,
                             poll, sleep)
    except BaseException as exc:
        withdraw(client, mine, f"the claim was withdrawn: {type(exc).__name__}")
        raise


def _wait_in_line(client: Any, experiment_id: str, mine: str, position: tuple[int, str], config_hash: str,
                  run_name: str, tracking_uri: str, poll: float, sleep: Callable[[float], None]) -> Claim:
    heartbeat = Heartbeat()
    reported: str | None = None
    waited_for = None
    while True:
        claims, finished = read_line(client, experiment_id, config_hash, mine)
        others = [c for c in claims if c.info.run_id != mine]
        ahead = [c for c in others if ticket_of(c) is None or _position(c) < position]
        if not ahead:
            if finished is not None:
                withdraw(client, mine, f"config FINISHED as run {finished.info.run_id} while this job waited")
                return Claim(reused=finished, waited_for=waited_for)
            return Claim(run_id=mine, waited_for=waited_for)
        holders = [c for c in ahead if ticket_of(c) is not None]
        if holders:
            holder = min(holders, key=_position)
            if holder.info.run_id != reported:
                reported, waited_for = holder.info.run_id, holder
                tags = holder.data.tags
                log.info("%s: config_hash %s is running elsewhere as run %r (%s, pid %s on %s); waiting for it",
                         run_name, config_hash[:12], holder.info.run_name, run_link(tracking_uri, holder),
                         tags.get(names.PID, "?"), tags.get(names.HOST, "?"))
        if heartbeat.due():
            set_tags(client, mine, heartbeat.tags())
        sleep(poll)


def set_tags(client: Any, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def withdraw(client: Any, run_id: str, reason: str) -> None:
    """End a claim that will not train: KILLED with the reason, then deleted (it holds no metrics)."""
    try:
        set_tags(client, run_id, {names.KILLED_REASON: reason})
        client.set_terminated(run_id, "KILLED")
        client.delete_run(run_id)
    except Exception as exc:  # the claim then stays; a later reader marks it KILLED once its owner is gone
        log.warning("could not withdraw the claim run %s: %s", run_id, exc)


def duplicates(runs: Iterable[Any]) -> dict[str, int]:
    """{config_hash: count} of hashes with more than one FINISHED run among ``runs`` (for checks and tests)."""
    counts: dict[str, int] = {}
    for run in runs:
        if run.info.status == "FINISHED" and names.CONFIG_HASH in run.data.tags:
            counts[run.data.tags[names.CONFIG_HASH]] = counts.get(run.data.tags[names.CONFIG_HASH], 0) + 1
    return {key: n for key, n in counts.items() if n > 1}
