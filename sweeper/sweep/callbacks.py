"""Hydra callbacks for sweeps: one MLflow parent run per multirun.

``on_multirun_start`` runs once, in the launching process, before any job: it opens (and if needed creates) the
sqlite store and the experiment, so parallel workers never race to migrate it, and creates the parent run with
``MlflowClient.create_run`` (not ``mlflow.start_run``, whose active run would block the jobs' runs). Before that it
composes and range-checks every job of the grid, so an invalid sweep starts nothing. The parent's id is handed to the
jobs in a file in ``hydra.sweep.dir`` (``sweeper.handoff``), which every launcher (basic, joblib, submitit) shares.

A drawer process draws the runs' curve figures beside the jobs (``sweeper.reporting.drawer``): started here before
any job, ended at the sweep's end, where it leaves no figure undrawn and each is logged to its run.

At the end the parent gets the sweep summary of ``sweeper.reporting.finalize.finalize_sweep``. Hydra does not call
``on_multirun_end`` when a job fails, so an exit hook summarises and terminates the parent (FAILED) then.
"""
from __future__ import annotations

import atexit
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .. import handoff, names, signals
from ..config.checks import expand_grid, validate_grid
from ..config.identity import swept_keys
from ..launchers import LauncherKind, SweeperKind, launcher_of, sweeper_of
from ..redact import mask_credentials
from ..reporting.console import summary_lines
from ..reporting.drawer import CurveDrawer
from ..tracking.queries import search_all_runs, tag_equals
from ..tracking.liveness import mark_orphaned_runs, owner_tags
from ..tracking.store import open_store, tag_experiment
from ..tracking.store_checks import one_line
from ..tracking.views import sweep_link, sweep_link_lines, write_sweep_view
from .launcher_checks import check_launcher
from .confirm_plan import plan as confirm_plan
from .search import check_space

log = logging.getLogger(__name__)

# How long the sweep's end waits for the drawer before drawing the rest itself; after Ctrl-C or SIGTERM only briefly
# (Slurm's grace period after SIGTERM is short), the figures left are drawn here all the same.
DRAWER_WAIT_SECONDS = 60.0
DRAWER_WAIT_SIGNALLED_SECONDS = 3.0


def sweep_display_name(config: DictConfig) -> str:
    """The sweep preset's name, or "sweep" + the command-line overrides of an ad-hoc sweep."""
    if config.get("sweep_name"):
        return str(config.sweep_name)
    if sweeper_of(config.hydra) is SweeperKind.CONFIRM and config.hydra.sweeper.get("from_sweep"):
        return f"confirm {config.hydra.sweeper.from_sweep}"
    overrides = [o for o in config.hydra.overrides.task if not o.startswith(("hydra", "tracking."))]
    return "sweep " + " ".join(overrides) if overrides else "sweep"


class MlflowSweepParent(Callback):
    """Validates the grid, creates the sweep's parent run, hands its id to the jobs, finalizes it at the end."""

    def __init__(self) -> None:
        self._client: Any = None
        self._run_id: str | None = None
        self._sweep_dir: Path | None = None
        self._experiment_id: str | None = None
        self._ui: dict | None = None  # the store, experiment, sweep and view the end-of-sweep link names
        self._drawer: CurveDrawer | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A dry run creates no store and no run. It also skips validate_grid: the dry-run launcher lists an invalid
        # job in its table with the reason (and exits 1), which says more than an abort before the table.
        if launcher_of(config.hydra) is LauncherKind.DRYRUN:
            return
        # Hydra turns a callback's exception into a warning and launches the jobs anyway; a sweep with an invalid job
        # or an unusable store must not start, so report in one sentence and exit (SystemExit passes through).
        try:
            check_launcher(config)
            searched: list[str] = []
            if sweeper_of(config.hydra) is SweeperKind.SEARCH:  # the space's extremes are composed and checked
                searched = list(check_space(config)[1].texts)
            # the confirm sweeper's first round: its grid, or the configs of an earlier sweep (its knobs checked)
            jobs = confirm_plan(config).jobs if sweeper_of(config.hydra) is SweeperKind.CONFIRM else expand_grid(config)
            validate_grid(config, jobs)
            sweep_dir = Path(str(config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            handoff.start(sweep_dir, None if jobs is None else len(jobs))
            swept = swept_keys(jobs) if jobs is not None else searched
            if sweeper_of(config.hydra) is SweeperKind.CONFIRM and names.SEED_PARAM not in swept:
                swept.append(names.SEED_PARAM)  # it adds seeds: they tell its runs apart
            handoff.write_swept(sweep_dir, swept)
            if not config.tracking.enabled:
                self._start_drawer(sweep_dir)
                return
            client, uri, experiment_id = open_store(config.tracking)
        except CompactHydraException as exc:
            sys.stderr.write(f"Error: {mask_credentials(exc)}\n")
            sys.exit(1)
        try:
            run, sweep_id, name = self._create_parent(config, client, experiment_id, sweep_dir)
        except Exception as exc:  # any store failure here: one sentence, and no job is launched
            sys.stderr.write(f"Error: cannot create the sweep's parent run in the MLflow store "
                             f"{mask_credentials(uri)}: {one_line(exc)}; no job was launched (check the store, "
                             "then relaunch the same command)\n")
            sys.exit(1)
        self._client, self._run_id, self._sweep_dir = client, run.info.run_id, sweep_dir
        self._experiment_id = experiment_id
        handoff.write_parent(sweep_dir, run.info.run_id, experiment_id, sweep_id, uri)
        atexit.register(self._terminate_if_running, "FAILED")
        self._start_drawer(sweep_dir)
        log.info("MLflow parent run %r (%s) for sweep %s", name, run.info.run_id, sweep_id)
        try:
            self._ui = open_sweep_view(client, uri, experiment_id, sweep_id, run.info.run_id, name, config)
        except Exception as exc:  # noqa: BLE001 - the view is a convenience: the sweep runs without it
            log.warning("could not write the sweep's MLflow UI view: %s", exc)

    @staticmethod
    def _create_parent(config: DictConfig, client: Any, experiment_id: str, sweep_dir: Path) -> tuple[Any, str, str]:
        """(parent run, sweep id, display name) of a new sweep, after marking orphaned runs KILLED."""
        # runs left RUNNING by a killed launch are KILLED now, before this sweep's jobs decide what to rerun
        mark_orphaned_runs(client, experiment_id)
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
        return run, sweep_id, name

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        handoff.close_bar()
        self._terminate_if_running("FINISHED")

    def _start_drawer(self, sweep_dir: Path) -> None:
        """The sweep's curve drawer, started once the sweep is sure to launch its jobs."""
        self._drawer = CurveDrawer.start(sweep_dir)
        atexit.register(self._finish_curves)  # a failed job skips on_multirun_end

    def _finish_curves(self) -> None:
        """Every run's curves.png drawn and logged (once: at the sweep's end or at exit)."""
        drawer, self._drawer = self._drawer, None
        if drawer is not None:
            drawer.finish(self._client if self._run_id is not None else None,
                          DRAWER_WAIT_SIGNALLED_SECONDS if signals.received() else DRAWER_WAIT_SECONDS)

    def summary_links(self) -> list[str]:
        """Lines appended to the end-of-sweep summary after the files: where to open the sweep in the UI."""
        if self._ui is None:
            return []
        return list(sweep_link_lines(self._ui["tracking_uri"], self._ui["experiment_id"], self._ui["view"]))

    def _terminate_if_running(self, status: str) -> None:
        """Attach the sweep summary (comparison.png, summary.csv/md, best-child tags) and end the parent run (KILLED
        when the sweep ended on Ctrl-C or SIGTERM). The drawer draws its last figures while the summary is written,
        on the other core; they are all drawn and logged before the parent ends."""
        if self._run_id is None:
            self._finish_curves()
            return
        if self._drawer is not None:
            handoff.end_curves(self._drawer.sweep_dir)
        if status == "FAILED" and signals.received():
            status = "KILLED"
            # a worker killed before it could end its run (joblib kills workers still busy after the grace period)
            try:
                mark_orphaned_runs(self._client, self._experiment_id)
            except Exception as exc:
                log.warning("could not mark the sweep's orphaned runs KILLED: %s", exc)
        handoff.close_bar()
        try:
            from ..reporting.finalize import finalize_sweep, sweep_title  # matplotlib: only when the sweep ends

            summary = finalize_sweep(self._client, self._run_id, self._sweep_dir,
                                     handoff.reused_job_numbers(self._sweep_dir),
                                     handoff.read_confirmation(self._sweep_dir))
            title = sweep_title(self._client.get_run(self._run_id).info.run_name or "")
            lines = summary_lines(summary, title, extra_lines=self.summary_links())
            # the end-of-sweep table is the sweep's result: plain lines on stdout (where Hydra's log lines go),
            # without the log prefix that would push the table's columns apart
            print("\n".join(lines), flush=True)
        except Exception as exc:  # the summary is a convenience: never fail the sweep over it
            log.warning("could not summarise sweep %s: %s", self._run_id, exc)
        self._finish_curves()
        try:
            if self._client.get_run(self._run_id).info.status == "RUNNING":
                self._client.set_terminated(self._run_id, status)
        except Exception as exc:  # at interpreter exit: report, never mask the sweep's own error
            log.warning("could not terminate the sweep's parent run %s: %s", self._run_id, exc)
        try:
            drop_parent_if_nothing_trained(self._client, self._run_id)
        except Exception as exc:  # noqa: BLE001 - a convenience: never fail the sweep over it
            log.warning("could not check the sweep's parent run for an all-reused relaunch: %s", exc)
        self._run_id = None


def open_sweep_view(client: Any, uri: str, experiment_id: str, sweep_id: str, parent_run_id: str, name: str,
                    config: DictConfig) -> dict:
    """Write the sweep's saved UI view (sweeper.tracking.views) and log its link; what ``summary_links`` needs."""
    tag_experiment(client, experiment_id)
    jobs = expand_grid(config)
    view = write_sweep_view(client, experiment_id, sweep_id, parent_run_id, name,
                            num_jobs=len(jobs) if jobs is not None else 1000, jobs=jobs)
    log.info("MLflow UI view of this sweep: %s", sweep_link(uri, experiment_id, view))
    return {"tracking_uri": uri, "experiment_id": experiment_id, "view": view}


def drop_parent_if_nothing_trained(client: Any, parent_run_id: str) -> bool:
    """A relaunch whose every job was reused (all FINISHED before) trained nothing: delete its parent run, which would
    only pile up as another, empty parent of the same name, and name the earlier parents of the runs it found. The
    sweep's view still shows those runs (they carry this sweep's link tag). True when the parent was deleted."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    if client.search_runs([experiment_id], tag_equals(names.PARENT_RUN_ID, parent_run_id), max_results=1):
        return False  # it trained (or tried to train) at least one run: a real sweep parent
    sweep_id = client.get_run(parent_run_id).data.tags.get(names.SWEEP_ID)
    found = search_all_runs(client, [experiment_id], tag_equals(names.sweep_link_tag(sweep_id), parent_run_id)) \
        if sweep_id else []
    if not found:
        return False  # nothing ran at all (e.g. every job failed before its run existed): keep the record
    client.delete_run(parent_run_id)
    earlier = sorted({r.data.tags.get(names.PARENT_RUN_ID, "none") for r in found})
    log.info("all %d jobs of this sweep had already FINISHED and were reused, nothing was trained: its new parent run "
             "%s is deleted again (no empty duplicate); the runs' earlier sweep parent(s): %s", len(found),
             parent_run_id, ", ".join(earlier))
    return True
