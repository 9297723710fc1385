"""A job's lifecycle, from its composed config to its run's end: the one home that every launcher drives.

    train_and_track(cfg)   one whole job: Hydra's task function (basic, joblib, submitit launchers; a search's trials)
      prepare, track_job   check, name and tag the job, open the store, reuse a FINISHED config  (sweeper.job)
      load_data            the dataset
      start_run            claim the config and open its run, log params and dataset; or reuse a run that FINISHED
                           while this job waited for its claim
      train                fit, streaming events to the run, then record_result
      record_result        flush the metrics, write the artifacts, log summary metrics and stop reason
      end                  ``sink.end("FINISHED")``, or ``end_failed``: FAILED or KILLED, with what the run logged

The population launcher (``sweeper.sweep.population``) drives the same steps for the members of a fused population,
replacing only ``train`` by one ``mlp_core.fit_population`` pass. A search's job gets its trial (``job.Trial``) from
the entry point, which finds it in the sweep's handoff (``sweeper.handoff``).
"""
from __future__ import annotations

import csv
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import mlp_core
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from . import handoff, names, signals
from .config.checks import to_core, value
from .job import Job, Store, Trial, claim_run, objective, prepare, run_params, summary_metrics, track_job
from .paths import outputs_dir
from .redact import mask_credentials
from .reporting.drawer import fitting
from .tracking.liveness import owner_tags
from .tracking.run import MetricSink, RunTracker
from .tracking.store_checks import store_step
from .tracking.views import run_link_lines

if TYPE_CHECKING:
    from hydra.conf import HydraConf
    from mlp_core.train import Event

log = logging.getLogger("sweeper")

CURVES_FILE = "curves.png"


class DataLoadError(CompactHydraException):
    """The dataset could not be loaded; printed as one sentence, without a traceback."""


def train_and_track(cfg: DictConfig, find_trial: Callable[[HydraConf | None], Trial | None] | None = None) -> float:
    """One job: validate, open the store, skip if finished, load data, claim the config, train, log. Returns the
    objective (best validation loss, or a search trial's objective; ``find_trial`` gives a job its trial). In a sweep,
    the job's outcome then goes into the sweep's progress line."""
    # also in launcher workers (joblib, submitit), which never run main(); a worker puts its own handlers back once
    # its run has ended, which tells the launcher waiting on an interrupt that it may go on (signals.restore)
    replaced = signals.install()
    try:
        job = prepare(cfg)
        with handoff.job_outcome(job.hydra_cfg if job.in_sweep else None) as outcome:
            result = _train_and_track(job, find_trial(job.hydra_cfg) if find_trial is not None else None)
            outcome.reused, outcome.run_id = job.reused, job.reused_run_id
        return result
    finally:
        signals.restore(replaced)


def _train_and_track(job: Job, trial: Trial | None) -> float:
    store, reused = track_job(job, trial)
    if reused is not None:
        return reused
    dataset = load_data(job.cfg)
    model_cfg, train_cfg = to_core(job.cfg)
    sink, reused = start_run(job, store, dataset, model_cfg, train_cfg, trial)
    if sink is None:
        return reused
    tracker = sink.tracker
    try:
        result = train(job, dataset, sink, model_cfg, train_cfg, trial.observe if trial else None)
        if tracker is not None:
            if trial is not None:
                tracker.set_tags(trial.end_tags(result.stop_reason))
            sink.end("FINISHED")
    except BaseException as exc:
        if tracker is not None:
            end_failed(sink, exc, _trial_failed(trial))
        raise
    log.info("%s: stop_reason=%s best val loss %.4f, best val accuracy %.4f after %d steps (%.1f s)", job.name,
             result.stop_reason, result.best_val_loss, result.best_val_accuracy, result.num_steps, result.wall_time_s)
    if not job.in_sweep:  # a sweep prints its runs' table and the view's link at its end instead
        print("\n".join(_single_run_lines(sink, store)), flush=True)
    if trial is not None:
        return trial.objective({key: v for key, v, _ in summary_metrics(result)})
    return objective(result)


def _single_run_lines(sink: MetricSink, store: Store | None) -> list[str]:
    """Where a single run's files are and how to open it in the MLflow UI (plain lines on stdout)."""
    lines = [f"run dir: {sink.run_dir}"]
    if store is not None and sink.tracker is not None:
        lines += run_link_lines(store.uri, store.experiment_id, sink.tracker.run_id)
    return lines


def load_data(cfg: DictConfig) -> mlp_core.Dataset:
    try:
        return mlp_core.load_dataset(
            name=value(cfg.data.name), split=value(cfg.data.split), root=cfg.data.root,
            normalization=value(cfg.data.normalization), allow_download=cfg.data.allow_download,
        )
    except ValueError as exc:  # mlp_core.DataError is a ValueError whose message names the source and the problem
        raise DataLoadError(f"Cannot load dataset {value(cfg.data.name)}/{value(cfg.data.split)}: "
                            f"{mask_credentials(exc)}") from None


def start_run(job: Job, store: Store | None, dataset: mlp_core.Dataset, model_cfg: mlp_core.ModelConfig,
              train_cfg: mlp_core.TrainConfig, trial: Trial | None = None) -> tuple[MetricSink | None, float | None]:
    """Claim the job's config and log its params and dataset: (its MetricSink, None); or (None, objective) when the
    config FINISHED elsewhere while this job waited its turn. A failure ends the run FAILED."""
    num_parameters = mlp_core.num_parameters(dataset.input_dim, model_cfg, dataset.num_classes)
    tracker = None
    if store is not None:
        with store_step(store.uri, "claiming the run's config"):
            run_id, reused = claim_run(job, store, {**job.tags, **owner_tags()}, trial)
        if run_id is None:
            job.reused = True
            return None, reused
        tracker = RunTracker.attach(store.client, run_id, background_metrics=bool(job.cfg.tracking.background_metrics))
    sink = MetricSink(tracker, run_dir=_job_dir(job))
    try:
        if tracker is not None:
            with store_step(store.uri, "logging the run's params and dataset"):
                tracker.log_params(run_params(job, model_cfg, num_parameters))
                tracker.log_dataset(dataset)
    except BaseException as exc:
        end_failed(sink, exc, _trial_failed(trial))
        raise
    log.info("%s: %s parameters, %d steps/epoch, %s, %d BLAS thread%s", job.name, f"{num_parameters:,}",
             len(dataset.train.y) // train_cfg.batch_size, dataset.source, job.threads, "" if job.threads == 1 else "s")
    return sink, None


def train(job: Job, dataset: mlp_core.Dataset, sink: MetricSink, model_cfg: mlp_core.ModelConfig,
          train_cfg: mlp_core.TrainConfig, observe: Callable[[Event], str | None] | None = None) -> mlp_core.FitResult:
    """Fit with the job's BLAS threads, streaming events to the sink; log the summary and artifacts. ``observe`` (a
    search trial's) sees every event after the sink and may stop the run (see ``mlp_core.fit``)."""
    signals.thread_lock_for(tqdm)  # no named semaphore a killed joblib worker would leak
    sink.progress = tqdm(total=train_cfg.epochs * (len(dataset.train.y) // train_cfg.batch_size), desc=job.name,
                         unit="step", dynamic_ncols=True, leave=False, position=handoff.run_bar_position(),
                         disable=not sys.stderr.isatty())
    try:
        with signals.Dropped() as dropped, threadpool_limits(limits=job.threads, user_api="blas"), \
                fitting(drawing_sweep(job)):

            def on_event(event: Event) -> str | None:
                dropped.check()  # an interrupt Python swallowed in a finalizer still ends the run here
                sink(event)
                return observe(event) if observe is not None else None

            result = mlp_core.fit(dataset, model_cfg, train_cfg, on_event=on_event)
            dropped.check()
    finally:
        sink.progress.close()
    record_result(job, result, sink)
    return result


def record_result(job: Job, result: mlp_core.FitResult, sink: MetricSink) -> None:
    """After training: flush the metrics, write the artifacts to the sink's run dir, log summary metrics, stop reason
    and artifacts (the run stays RUNNING). A job of a sweep hands its curve figure to the sweep's drawer, which logs it
    when the sweep ends (``sweeper.reporting.drawer``)."""
    sink.flush()
    sweep_dir = _curves_drawer(job, sink)
    paths = write_artifacts(job.cfg, result, sink.run_dir, job.name, curves=sweep_dir is None)
    if sweep_dir is not None and not handoff.request_curves(
            sweep_dir, job.hydra_cfg.job.num, sink.tracker.run_id if sink.tracker is not None else None, paths[1],
            sink.run_dir / CURVES_FILE, job.name):
        paths.append(_draw_curves(result, sink.run_dir, job.name))
    sink.log_summary(summary_metrics(result), {names.STOP_REASON: result.stop_reason}, paths)


def write_artifacts(cfg: DictConfig, result: mlp_core.FitResult, out_dir: Path, title: str,
                    curves: bool = True) -> list[Path]:
    """config.yaml, history.csv, model.npz and (unless ``curves`` is False) curves.png in the job's output dir."""
    paths = [out_dir / "config.yaml", out_dir / "history.csv", out_dir / "model.npz"]
    paths[0].write_text(mask_credentials(OmegaConf.to_yaml(cfg, resolve=True)))
    with paths[1].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=handoff.HISTORY_COLUMNS, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.history_rows())
    result.model.save(paths[2])
    return [*paths, _draw_curves(result, out_dir, title)] if curves else paths


def _draw_curves(result: mlp_core.FitResult, out_dir: Path, title: str) -> Path:
    from .reporting.plots import plot_curves  # matplotlib: only where a figure is drawn inline

    return plot_curves(result, out_dir / CURVES_FILE, title)


def _curves_drawer(job: Job, sink: MetricSink) -> Path | None:
    """The sweep dir whose drawer draws this job's figure, or None to draw it here: a single run (its own sweep's
    end), a sweep without a drawer (no sweep callback) or one that has ended, and a run in another store than the
    sweep's parent (a swept tracking.uri: the launcher could not log the figure to it)."""
    sweep_dir = drawing_sweep(job)
    if sweep_dir is None:
        return None
    if sink.tracker is not None and handoff.parent_in(sweep_dir, sink.tracker.client.tracking_uri) is None:
        return None
    return sweep_dir


def drawing_sweep(job: Job) -> Path | None:
    """The sweep dir whose drawer takes this job's figure and waits for its fit to end (``drawer.fitting``), or None:
    a single run, a sweep without a drawer (no sweep callback) or one that has ended."""
    if not job.in_sweep:
        return None
    sweep_dir = Path(job.hydra_cfg.sweep.dir)
    return sweep_dir if handoff.curves_open(sweep_dir) else None


def end_failed(sink: MetricSink, exc: BaseException, tags: dict[str, str] | None = None) -> None:
    """Keep the partial history, tag the error and end the run KILLED (Ctrl-C, SIGTERM: the signal named in the
    killed_reason tag) or FAILED; never hide the job's own error behind a tracking one."""
    tracker = sink.tracker
    killed = isinstance(exc, KeyboardInterrupt)
    if sink.store_failed or isinstance(exc, CompactHydraException):  # the store failed: another call would only
        return  # wait out the retries again (the run's unsaved points are spilled; a later launch marks it KILLED)
    try:
        sink.flush()
        tags = {names.ERROR: f"{type(exc).__name__}: {mask_credentials(exc)}",
                names.ERROR_TRACEBACK: mask_credentials(traceback.format_exc()[-4000:]), **(tags or {})}
        if killed:
            tags[names.KILLED_REASON] = f"interrupted by {signals.received_name()} (pid {os.getpid()})"
        tracker.set_tags(tags)
        sink.end("KILLED" if killed else "FAILED")
    except Exception as tracking_exc:
        log.warning("could not mark run %s as failed: %s", tracker.run_id, tracking_exc)


def _trial_failed(trial: Trial | None) -> dict[str, str]:
    return {names.TRIAL_STATE: "FAIL"} if trial is not None else {}


def _job_dir(job: Job) -> Path:
    """The job's own output dir (a population launcher sets up several jobs in one process); outside Hydra (a task
    function called directly) a new dir under outputs/runs."""
    if job.hydra_cfg is not None:
        return Path(job.hydra_cfg.runtime.output_dir)
    path = outputs_dir() / "runs" / time.strftime("%Y-%m-%d/%H-%M-%S")
    path.mkdir(parents=True, exist_ok=True)
    return path
