"""`mlp-sweep` (also `python -m sweeper`): the Hydra app around mlp_core.

Data flow: YAML (conf/) -> schema-checked config (sweeper.config) -> mlp_core's frozen dataclasses -> ``mlp_core.fit``
-> events -> MLflow (sweeper.tracking). The task function returns the objective, the best validation loss.

Examples:
    mlp-sweep experiment=task3c
    mlp-sweep -m experiment=task2c,task3a,task3b,task3c
    mlp-sweep -m experiment=task3c 'model.hidden_sizes=[32],[64],[128]'
    mlp-sweep -m +sweep=task4_width
"""
from __future__ import annotations

import contextlib
import csv
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import names, signals
from .config.checks import to_core, value
from .job import Job, Store, claim_run, objective, prepare, run_params, summary_metrics, track_job
from .paths import CONF_DIR, outputs_dir, unwritable_reason
from .redact import mask_credentials
from .sweep import progress

log = logging.getLogger("sweeper")

HISTORY_COLUMNS = ("step", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


def register() -> None:
    """Everything Hydra needs before it composes: the config schema and the outputs-dir resolver. Idempotent."""
    from .config.schema import register_configs

    OmegaConf.register_new_resolver("mlp_sweeps.outputs", _usable_outputs_dir, replace=True)
    register_configs()


def _usable_outputs_dir() -> str:
    """outputs_dir() for hydra.run.dir / hydra.sweep.dir; exits with one sentence if no directory can be made there.

    Hydra creates the job's dir before our task function runs, and a failure there would end in a traceback.
    """
    path = outputs_dir()
    why = unwritable_reason(path)
    if why is not None:
        sys.stderr.write(f"Error: cannot create the outputs directory {path}: {why}; "
                         "set MLP_SWEEPS_OUTPUTS to a writable directory\n")
        sys.exit(1)
    return str(path)


class DataLoadError(CompactHydraException):
    """The dataset could not be loaded; printed as one sentence, without a traceback."""


# ---------------------------------------------------------------------------------------------------- training

def load_data(cfg: DictConfig) -> Any:
    import mlp_core

    try:
        return mlp_core.load_dataset(
            name=value(cfg.data.name), split=value(cfg.data.split), root=cfg.data.root,
            normalization=value(cfg.data.normalization), allow_download=cfg.data.allow_download,
        )
    except ValueError as exc:  # mlp_core.DataError is a ValueError whose message names the source and the problem
        raise DataLoadError(f"Cannot load dataset {value(cfg.data.name)}/{value(cfg.data.split)}: "
                            f"{mask_credentials(exc)}") from None


def _progress_bar(total: int, name: str) -> Any:
    from tqdm.auto import tqdm

    signals.thread_lock_for(tqdm)
    return tqdm(total=total, desc=name, unit="step", dynamic_ncols=True, leave=False,
                position=progress.run_bar_position(), disable=not sys.stderr.isatty())


def _output_dir() -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    path = outputs_dir() / "runs" / time.strftime("%Y-%m-%d/%H-%M-%S")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_artifacts(cfg: DictConfig, result: Any, out_dir: Path, title: str) -> list[Path]:
    """config.yaml, history.csv, model.npz and curves.png in the job's output dir."""
    from .reporting.plots import plot_curves

    paths = [out_dir / "config.yaml", out_dir / "history.csv", out_dir / "model.npz", out_dir / "curves.png"]
    paths[0].write_text(mask_credentials(OmegaConf.to_yaml(cfg, resolve=True)))
    with paths[1].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.history_rows())
    result.model.save(paths[2])
    plot_curves(result, paths[3], title)
    return paths


def train(job: Job, dataset: Any, sink: Any, model_cfg: Any, train_cfg: Any, observe: Any = None) -> Any:
    """Fit with the job's BLAS threads, streaming events to the sink; log the summary and artifacts. ``observe`` (a
    search trial's) sees every event after the sink and may stop the run (see ``mlp_core.fit``)."""
    import mlp_core
    from threadpoolctl import threadpool_limits

    sink.progress = _progress_bar(train_cfg.epochs * (len(dataset.train.y) // train_cfg.batch_size), job.name)
    try:
        with signals.Dropped() as dropped, threadpool_limits(limits=job.threads, user_api="blas"):

            def on_event(event: Any) -> str | None:
                dropped.check()  # an interrupt Python swallowed in a finalizer still ends the run here
                sink(event)
                return observe(event) if observe is not None else None

            result = mlp_core.fit(dataset, model_cfg, train_cfg, on_event=on_event)
            dropped.check()
    finally:
        sink.progress.close()
    record_result(job, result, sink)
    return result


def record_result(job: Job, result: Any, sink: Any) -> None:
    """After training: flush the metrics, write the artifacts to the sink's run dir, log summary metrics, stop reason
    and artifacts (the run stays RUNNING)."""
    sink.flush()
    paths = write_artifacts(job.cfg, result, sink.run_dir, job.name)
    sink.log_summary(summary_metrics(result), {names.STOP_REASON: result.stop_reason}, paths)


def start_run(job: Job, store: Store | None, dataset: Any, model_cfg: Any, train_cfg: Any,
              trial: Any = None) -> tuple[Any, float | None]:
    """Claim the job's config and log its params and dataset: (its MetricSink, None); or (None, objective) when the
    config FINISHED elsewhere while this job waited its turn. A failure ends the run FAILED."""
    import mlp_core

    from .tracking.liveness import owner_tags
    from .tracking.run import MetricSink, RunTracker
    from .tracking.store_checks import store_step

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
        _end_failed(sink, exc, _trial_failed(trial))
        raise
    log.info("%s: %d parameters, %d steps/epoch, %s, %d BLAS threads", job.name, num_parameters,
             len(dataset.train.y) // train_cfg.batch_size, dataset.source, job.threads)
    return sink, None


def _job_dir(job: Job) -> Path:
    """The job's own output dir (a population launcher sets up several jobs in one process)."""
    return Path(job.hydra_cfg.runtime.output_dir) if job.hydra_cfg is not None else _output_dir()


def _trial_failed(trial: Any) -> dict[str, str]:
    return {names.TRIAL_STATE: "FAIL"} if trial is not None else {}


def train_and_track(cfg: DictConfig) -> float:
    """One job: validate, open the store, skip if finished, load data, claim the config, train, log. Returns the
    objective (best validation loss). In a sweep, the job's outcome then goes into the sweep's progress line."""
    # also in launcher workers (joblib, submitit), which never run main(); a worker puts its own handlers back once
    # its run has ended, which tells the launcher waiting on an interrupt that it may go on (signals.restore)
    replaced = signals.install()
    try:
        job = prepare(cfg)
        with progress.job_outcome(job.hydra_cfg if job.in_sweep else None) as outcome:
            result = _train_and_track(job)
            outcome.reused = job.reused
        return result
    finally:
        signals.restore(replaced)


def _train_and_track(job: Job) -> float:
    from .sweep.trial import TrialLink

    trial = TrialLink.of_job(job.hydra_cfg)  # None unless the job is a trial of a search sweeper
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
            _end_failed(sink, exc, _trial_failed(trial))
        raise
    log.info("%s: stop_reason=%s best val loss %.4f, best val accuracy %.4f after %d steps (%.1f s)", job.name,
             result.stop_reason, result.best_val_loss, result.best_val_accuracy, result.num_steps, result.wall_time_s)
    if trial is not None:
        return trial.objective({key: v for key, v, _ in summary_metrics(result)})
    return objective(result)


def _end_failed(sink: Any, exc: BaseException, tags: dict[str, str] | None = None) -> None:
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


# ---------------------------------------------------------------------------------------------------- entry point

@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def task(cfg: DictConfig) -> float:
    """Hydra task function of `mlp-sweep`; returns the objective (best validation loss)."""
    try:
        return train_and_track(cfg)
    except KeyboardInterrupt:
        signals.requeue_if_preempted()  # a Slurm job of submitit: requeued by Slurm, exits here (SystemExit)
        raise
    except CompactHydraException as exc:
        # A single run's setup error (config range, tracking store, data): one sentence and exit 1. Raising would
        # make Hydra echo the overrides, which may hold credentials. In a sweep, raise: the other jobs still run.
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN:
            sys.stderr.write(f"Error: {mask_credentials(exc)}\n")
            _remove_unused_run_dir(Path(HydraConfig.get().runtime.output_dir))
            sys.exit(1)
        raise


def main() -> None:
    """Console entry point of `mlp-sweep`: register the schema and resolver, then hand over to Hydra.

    Ctrl-C and SIGTERM end the run (and a sweep's parent) KILLED with what was logged, then exit with 128 + the
    signal's number and one line instead of a traceback.
    """
    from .config.files import config_dirs, syntax_error

    problem = syntax_error(config_dirs(CONF_DIR, sys.argv[1:]))
    if problem is not None:
        sys.stderr.write(f"Error: {problem}\n")
        sys.exit(1)
    register()
    signals.install()
    try:
        task()
    except ValueError as exc:
        if not str(exc).startswith("Only one of --run, --multirun"):
            raise
        # Hydra's own check of its mode flags, raised before any composition (e.g. `-m ... --cfg job`)
        sys.stderr.write(f"Error: {exc}; inspect one job's config without -m (mlp-sweep +sweep=<name> --cfg job), "
                         "or list a sweep's jobs with -m ... hydra/launcher=dryrun\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write(f"mlp-sweep: interrupted by {signals.received_name()}; runs in progress are marked KILLED with the metrics "
                         "logged so far (relaunch the same command to resume)\n")
        sys.exit(signals.exit_code())


def _remove_unused_run_dir(run_dir: Path) -> None:
    """A run refused before training leaves nothing behind: drop the dir if it holds only Hydra's own files."""
    import shutil

    if run_dir.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in (run_dir.parent, run_dir.parent.parent):  # <outputs>/runs/<date>: only if now empty
            with contextlib.suppress(OSError):
                parent.rmdir()
