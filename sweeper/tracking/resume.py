"""Resume and skip: a relaunched sweep (or single run) reuses every configuration that already FINISHED.

Hydra has no sweep resume and no hook that skips a job, so the task function asks before it creates its run:
``find_finished`` returns the newest FINISHED run of the experiment with the job's ``config_hash`` tag (what the hash
covers: ``sweeper.config.identity``). The job then logs one line naming that run, creates no run of its own, and
returns the run's objective. Inside a sweep the reused run gets the tag ``mlp_sweeps.sweep.<sweep_id>`` = <parent run
id>, so the new sweep's summary and comparison include it. FAILED and KILLED runs never count, so those configurations
run again; ``tracking.skip_finished=false`` forces a rerun.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from .. import names
from ..redact import mask_credentials
from .queries import all_of, status_is, tag_equals


def find_finished(client: Any, experiment_id: str, config_hashes: Iterable[str]) -> Any | None:
    """The newest FINISHED run of the experiment tagged with one of ``config_hashes`` (tried in order: the current
    hash first, then the hashes earlier releases gave the same config). Sweep parents carry no such tag."""
    for config_hash in config_hashes:
        runs = client.search_runs(
            [experiment_id],
            filter_string=all_of(tag_equals(names.CONFIG_HASH, config_hash), status_is("FINISHED")),
            max_results=1, order_by=["attributes.start_time DESC"],
        )
        if runs:
            return runs[0]
    return None


def run_link(tracking_uri: str, run: Any) -> str:
    """A UI link for http(s) stores, the run id otherwise (a sqlite file has no address to open)."""
    if tracking_uri.startswith(("http://", "https://")):
        base = mask_credentials(tracking_uri).rstrip("/")
        return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    return f"run id {run.info.run_id}"


def objective_of(run: Any) -> float:
    """The reused run's objective (``best/val_loss``; inf when it is missing or not finite)."""
    value = run.data.metrics.get(names.OBJECTIVE)
    return float(value) if value is not None and math.isfinite(value) else float("inf")


def link_to_sweep(client: Any, run: Any, parent: dict | None, config_label: str | None = None) -> None:
    """Tag the reused run with the new sweep, so the sweep's summary, comparison and UI view include it; a run logged
    by an older release also gets the ``config_label`` the view groups by."""
    if not parent:
        return
    from mlflow.entities import RunTag

    tags = [RunTag(names.sweep_link_tag(parent[names.SWEEP_ID]), parent["run_id"])]
    if config_label and names.CONFIG_LABEL not in run.data.tags:
        tags.append(RunTag(names.CONFIG_LABEL, config_label))
    client.log_batch(run.info.run_id, tags=tags)
