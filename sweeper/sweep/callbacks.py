"""Hydra callbacks for sweeps: one MLflow parent run per multirun.

``on_multirun_start`` runs once, in the launching process, before any job: it opens (and if needed creates) the
sqlite store and the experiment, so parallel workers never race to migrate it, and creates the parent run with
``MlflowClient.create_run`` (not ``mlflow.start_run``, whose active run would block the jobs' runs). Before that it
composes and range-checks every job of the grid, so an invalid sweep starts nothing. The parent's id is handed to the
jobs in a file in ``hydra.sweep.dir``, which every launcher (basic, joblib, submitit) shares.

At the end the parent gets the sweep summary of ``sweeper.reporting.finalize.finalize_sweep``. Hydra does not call
``on_multirun_end`` when a job fails, so an exit hook summarises and terminates the parent (FAILED) then.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .. import names, signals

log = logging.getLogger(__name__)

def sweep_display_name(config: DictConfig) -> str:
    """The sweep preset's name, or "sweep" + the command-line overrides of an ad-hoc sweep."""
    if config.get("sweep_name"):
        return str(config.sweep_name)
    overrides = [o for o in config.hydra.overrides.task if not o.startswith(("hydra", "tracking."))]
    return "sweep " + " ".join(overrides) if overrides else "sweep"


def uri_digest(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()


def read_parent(sweep_dir: str | Path) -> dict | None:
    """The parent-run handoff written by ``MlflowSweepParent``, or None outside a tracked sweep."""
    path = Path(sweep_dir) / names.PARENT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


class MlflowSweepParent(Callback):
    """Validates the grid, creates the sweep's parent run, hands its id to the jobs, finalizes it at the end."""

    def __init__(self) -> None:
        self._client: Any = None
        self._run_id: str | None = None
        self._sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.errors import CompactHydraException

        from ..config.checks import validate_grid
        from ..redact import mask_credentials
        from ..tracking.liveness import mark_orphaned_runs, owner_tags
        from ..tracking.store import open_store
        from .dryrun import is_dry_run
        from .launcher_checks import check_launcher

        # A dry run creates no store and no run. It also skips validate_grid: the dry-run launcher lists an invalid
        # job in its table with the reason (and exits 1), which says more than an abort before the table.
        if is_dry_run(config):
            return
        # Hydra turns a callback's exception into a warning and launches the jobs anyway; a sweep with an invalid job
        # or an unusable store must not start, so report in one sentence and exit (SystemExit passes through).
        try:
            check_launcher(config)
            validate_grid(config)
            if not config.tracking.enabled:
                return
            client, uri, experiment_id = open_store(config.tracking)
        except CompactHydraException as exc:
            sys.stderr.write(f"Error: {mask_credentials(exc)}\n")
            sys.exit(1)
        # runs left RUNNING by a killed launch are KILLED now, before this sweep's jobs decide what to rerun
        mark_orphaned_runs(client, experiment_id)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        sweep_id = f"{sweep_dir.name}-{uuid.uuid4().hex[:8]}"
        name = sweep_display_name(config)
        run = client.create_run(
            experiment_id,
            run_name=name,
            tags={
                names.SWEEP_ID: sweep_id,
                names.ROLE: names.ROLE_SWEEP_PARENT,
                names.OVERRIDES: mask_credentials(" ".join(config.hydra.overrides.task)),
                names.SWEEP_DIR: str(sweep_dir),
                names.SOURCE_NAME: names.SOURCE_NAME_VALUE,
                # host + pid only: the parent has no heartbeat, so another host never takes a long sweep for dead
                **owner_tags(heartbeat=False),
            },
        )
        self._client, self._run_id, self._sweep_dir = client, run.info.run_id, sweep_dir
        # the URI itself may hold credentials: the file keeps a masked copy and a digest the jobs compare with theirs
        handoff = {"run_id": run.info.run_id, "experiment_id": experiment_id, names.SWEEP_ID: sweep_id,
                   "tracking_uri": mask_credentials(uri), "tracking_uri_sha256": uri_digest(uri)}
        tmp = sweep_dir / (names.PARENT_FILE + ".tmp")
        tmp.write_text(json.dumps(handoff))
        tmp.replace(sweep_dir / names.PARENT_FILE)
        atexit.register(self._terminate_if_running, "FAILED")
        log.info("MLflow parent run %r (%s) for sweep %s", name, run.info.run_id, sweep_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._terminate_if_running("FINISHED")

    def _terminate_if_running(self, status: str) -> None:
        """Attach the sweep summary (comparison.png, summary.csv/md, best-child tags) and end the parent run (KILLED
        when the sweep ended on Ctrl-C or SIGTERM)."""
        if self._run_id is None:
            return
        if status == "FAILED" and signals.received():
            status = "KILLED"
        try:
            from ..reporting.finalize import finalize_sweep

            finalize_sweep(self._client, self._run_id, self._sweep_dir)
        except Exception as exc:  # the summary is a convenience: never fail the sweep over it
            log.warning("could not summarise sweep %s: %s", self._run_id, exc)
        try:
            if self._client.get_run(self._run_id).info.status == "RUNNING":
                self._client.set_terminated(self._run_id, status)
        except Exception as exc:  # at interpreter exit: report, never mask the sweep's own error
            log.warning("could not terminate the sweep's parent run %s: %s", self._run_id, exc)
        self._run_id = None
