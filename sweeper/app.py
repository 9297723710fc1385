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
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import names, signals
from .config.checks import ConfigError, to_core, validate, value
from .config.identity import flatten, legacy_hashes, run_hashes, run_name
from .paths import CONF_DIR, git_commit, outputs_dir, unwritable_reason
from .redact import mask_credentials
from .sweep.workers import blas_threads

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


# ---------------------------------------------------------------------------------------------------- the job

@dataclass
class Job:
    """What a job knows before it trains: its config as a plain dict, its name, overrides and BLAS threads."""

    cfg: DictConfig
    container: dict
    name: str
    overrides: list[str]
    threads: int
    hydra_cfg: Any
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def in_sweep(self) -> bool:
        return self.hydra_cfg is not None and self.hydra_cfg.mode == RunMode.MULTIRUN


def prepare(cfg: DictConfig) -> Job:
    """Check the config and gather what identifies the job; raises ConfigError before any work."""
    validate(cfg)
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra_cfg is not None and hydra_cfg.mode == RunMode.RUN and cfg.sweep_name is not None:
        # without -m Hydra ignores hydra.sweeper.params and would silently train the default config once
        raise ConfigError(f"sweep preset {cfg.sweep_name!r} declares a grid: run it with -m, "
                          f"e.g. mlp-sweep -m +sweep={cfg.sweep_name}")
    overrides = list(hydra_cfg.overrides.task) if hydra_cfg else []
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return Job(cfg, container, run_name(cfg.name, overrides), overrides, blas_threads(cfg), hydra_cfg)


def run_tags(job: Job, parent: dict | None) -> dict[str, str]:
    commit, dirty = git_commit()
    config_hash, config_hash_noseed = run_hashes(job.container, job.threads)
    tags = {
        names.OVERRIDES: mask_credentials(" ".join(job.overrides)),
        names.CONFIG_HASH: config_hash,
        names.CONFIG_HASH_NOSEED: config_hash_noseed,
        names.GIT_COMMIT: commit,
        names.GIT_DIRTY: str(dirty).lower() if commit else None,
        names.SOURCE_GIT_COMMIT: commit,
        names.SOURCE_NAME: names.SOURCE_NAME_VALUE,
        names.SWEEP_ID: parent[names.SWEEP_ID] if parent else None,
        names.BLAS_THREADS: job.threads,
        names.OUTPUT_DIR: job.hydra_cfg.runtime.output_dir if job.hydra_cfg else None,
        names.EXPERIMENT: job.cfg.name,
    }
    return {key: str(v) for key, v in tags.items() if v is not None}


def run_params(job: Job, model_cfg: Any, num_parameters: int) -> dict[str, Any]:
    """The resolved config with dotted keys (credentials masked), plus what the config only implies."""
    params = {k: mask_credentials(v) if isinstance(v, str) else v for k, v in flatten(job.container).items()}
    params[names.EFFECTIVE_HIDDEN_SIZES_PARAM] = list(model_cfg.hidden_sizes)
    params[names.NUM_PARAMETERS] = num_parameters
    params[names.BLAS_THREADS_PARAM] = job.threads
    return params


def summary_metrics(result: Any) -> list[tuple[str, float, int]]:
    values = {
        names.NUM_PARAMETERS: result.num_parameters,
        names.BEST_VAL_LOSS: result.best_val_loss,
        names.BEST_VAL_ACCURACY: result.best_val_accuracy,
        names.FINAL_VAL_LOSS: result.final_val_loss,
        names.FINAL_VAL_ACCURACY: result.final_val_accuracy,
        names.EPOCHS: result.epochs,
        names.STEPS: result.num_steps,
        names.TRAIN_SECONDS: result.wall_time_s,
    }
    return [(key, float(v), 0) for key, v in values.items()]


def objective(result: Any) -> float:
    """The value a job returns to Hydra: the best validation loss; a diverged run is the worst, never NaN."""
    best = float(result.best_val_loss)
    return best if math.isfinite(best) else float("inf")


# ---------------------------------------------------------------------------------------------------- the store

@dataclass
class Store:
    client: Any
    uri: str
    experiment_id: str
    parent: dict | None


def open_tracking(job: Job) -> Store:
    """Open the store (and the sweep's parent handoff); mark orphaned runs when no sweep launcher did it already."""
    from .sweep.callbacks import read_parent, uri_digest
    from .tracking.liveness import mark_orphaned_runs
    from .tracking.store import open_store
    from .tracking.store_checks import store_step

    client, uri, experiment_id = open_store(job.cfg.tracking)
    parent = read_parent(job.hydra_cfg.sweep.dir) if job.in_sweep else None
    if parent is not None and parent["tracking_uri_sha256"] != uri_digest(uri):
        parent = None  # this job logs to another store than the sweep's parent (tracking.uri was swept)
    if parent is not None:
        experiment_id = parent["experiment_id"]
    else:  # in a sweep the launcher did this once, before any job started
        with store_step(uri, "looking for orphaned runs"):
            mark_orphaned_runs(client, experiment_id)
    return Store(client, uri, experiment_id, parent)


def reuse_finished(job: Job, store: Store) -> float | None:
    """If this config already FINISHED (also under an older release's hash), link that run to the sweep and return
    its objective; None when the job must train."""
    from .tracking.resume import find_finished, reuse_run

    run = find_finished(store.client, store.experiment_id, config_hashes(job))
    return None if run is None else reuse_run(store, job.name, run, "already FINISHED")


def config_hashes(job: Job) -> list[str]:
    return [job.tags[names.CONFIG_HASH], *legacy_hashes(job.container, job.threads)]


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

    return tqdm(total=total, desc=name, unit="step", dynamic_ncols=True, leave=False,
                disable=not sys.stderr.isatty())


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


def train(job: Job, dataset: Any, sink: Any, model_cfg: Any, train_cfg: Any) -> Any:
    """Fit with the job's BLAS threads, streaming events to the sink; log the summary and artifacts."""
    import mlp_core
    from threadpoolctl import threadpool_limits

    sink.progress = _progress_bar(train_cfg.epochs * (len(dataset.train.y) // train_cfg.batch_size), job.name)
    try:
        with signals.Dropped() as dropped, threadpool_limits(limits=job.threads, user_api="blas"):

            def on_event(event: Any) -> None:
                dropped.check()  # an interrupt Python swallowed in a finalizer still ends the run here
                sink(event)

            result = mlp_core.fit(dataset, model_cfg, train_cfg, on_event=on_event)
            dropped.check()
    finally:
        sink.progress.close()
    sink.flush()
    paths = write_artifacts(job.cfg, result, sink.run_dir, job.name)
    sink.log_summary(summary_metrics(result), {names.STOP_REASON: result.stop_reason}, paths)
    return result


def train_and_track(cfg: DictConfig) -> float:
    """One job: validate, open the store, skip if finished, load data, create the run, train, log. Returns the
    objective (best validation loss)."""
    # also in launcher workers (joblib, submitit), which never run main(); a worker puts its own handlers back once
    # its run has ended, which tells the launcher waiting on an interrupt that it may go on (signals.restore)
    replaced = signals.install()
    try:
        return _train_and_track(cfg)
    finally:
        signals.restore(replaced)


def _train_and_track(cfg: DictConfig) -> float:
    import mlp_core

    from .tracking.run import MetricSink

    job = prepare(cfg)
    store = None
    if cfg.tracking.enabled:
        store = open_tracking(job)
        job.tags = run_tags(job, store.parent)
        if cfg.tracking.skip_finished:
            reused = reuse_finished(job, store)
            if reused is not None:
                return reused

    dataset = load_data(cfg)
    model_cfg, train_cfg = to_core(cfg)
    num_parameters = mlp_core.num_parameters(dataset.input_dim, model_cfg, dataset.num_classes)
    tracker = None
    if store is not None:
        from .tracking.claims import claim_run
        from .tracking.liveness import owner_tags
        from .tracking.run import RunTracker
        from .tracking.store_checks import store_step

        with store_step(store.uri, "claiming the run's config"):
            run_id, reused = claim_run(store, job.name, {**job.tags, **owner_tags()}, config_hashes(job),
                                       forced=not cfg.tracking.skip_finished)
        if run_id is None:
            return reused
        tracker = RunTracker.attach(store.client, run_id, background_metrics=bool(cfg.tracking.background_metrics))
    sink = MetricSink(tracker, run_dir=_output_dir())
    try:
        if tracker is not None:
            with store_step(store.uri, "logging the run's params and dataset"):
                tracker.log_params(run_params(job, model_cfg, num_parameters))
                tracker.log_dataset(dataset)
        log.info("%s: %d parameters, %d steps/epoch, %s, %d BLAS threads", job.name, num_parameters,
                 len(dataset.train.y) // train_cfg.batch_size, dataset.source, job.threads)
        result = train(job, dataset, sink, model_cfg, train_cfg)
        if tracker is not None:
            tracker.end("FINISHED")
    except BaseException as exc:
        if tracker is not None:
            _end_failed(sink, exc)
        raise
    log.info("%s: stop_reason=%s best val loss %.4f, best val accuracy %.4f after %d steps (%.1f s)", job.name,
             result.stop_reason, result.best_val_loss, result.best_val_accuracy, result.num_steps, result.wall_time_s)
    return objective(result)


def _end_failed(sink: Any, exc: BaseException) -> None:
    """Keep the partial history, tag the error and end the run KILLED (Ctrl-C, SIGTERM: the signal named in the
    killed_reason tag) or FAILED; never hide the job's own error behind a tracking one."""
    tracker = sink.tracker
    killed = isinstance(exc, KeyboardInterrupt)
    if sink.store_failed or isinstance(exc, CompactHydraException):  # the store failed: another call would only
        return  # wait out the retries again (the run's unsaved points are spilled; a later launch marks it KILLED)
    try:
        sink.flush()
        tags = {names.ERROR: f"{type(exc).__name__}: {mask_credentials(exc)}",
                names.ERROR_TRACEBACK: mask_credentials(traceback.format_exc()[-4000:])}
        if killed:
            tags[names.KILLED_REASON] = f"interrupted by {signals.received_name()} (pid {os.getpid()})"
        tracker.set_tags(tags)
        tracker.end("KILLED" if killed else "FAILED")
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
