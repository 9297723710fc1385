"""`mlp-sweep` (also `python -m sweeper`): the Hydra app around mlp_core.

Data flow: YAML (conf/) -> schema-checked config (sweeper.schema) -> range validation -> mlp_core's frozen
dataclasses -> ``mlp_core.fit`` -> events -> MLflow (sweeper.tracking). The task function returns the objective,
the best validation loss.

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
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import mlp_core
from mlp_core import TrainLosses, ValidationPoint

from .callbacks import read_parent, uri_digest
from .resume import find_finished, link_to_sweep, mark_orphaned_runs, objective_of, owner_tags, run_link
from .schema import ConfigError, effective_hidden_sizes, register_configs, to_core, validate, validate_against_dataset
from .tracking import (
    REPO_ROOT,
    RunTracker,
    config_hash,
    flatten,
    git_commit,
    mask_credentials,
    open_store,
    outputs_dir,
)

log = logging.getLogger("sweeper")

CONF_DIR = REPO_ROOT / "conf"
HISTORY_COLUMNS = ("step", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
# Flush buffered metrics when this many are waiting or this many seconds passed (keeps partial history of a killed run).
FLUSH_METRICS = 1000
FLUSH_SECONDS = 10.0
# Overrides that select what the run name already says (the experiment's own name) or say nothing about the model.
RUN_NAME_SKIPPED_PREFIXES = ("experiment=", "+experiment=", "sweep=", "+sweep=", "hydra.", "hydra/", "tracking.")


def _usable_outputs_dir() -> str:
    """outputs_dir() for hydra.run.dir / hydra.sweep.dir; exits with one sentence if no directory can be made there.

    Hydra creates the job's dir before our task function runs, and a failure there would end in a traceback.
    """
    path = outputs_dir()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is not a directory" if not existing.is_dir() else "is not writable"
        sys.stderr.write(f"Error: cannot create the outputs directory {path}: {existing} {why}; "
                         "set MLP_SWEEPS_OUTPUTS to a writable directory\n")
        sys.exit(1)
    return str(path)


OmegaConf.register_new_resolver("mlp_sweeps.outputs", _usable_outputs_dir, replace=True)
register_configs()


class DataLoadError(CompactHydraException):
    """The dataset could not be loaded; printed as one sentence, without a traceback."""


def _value(node: Any) -> Any:
    return getattr(node, "value", node)


def run_name(cfg: DictConfig, overrides: list[str]) -> str:
    """``task3c hidden_sizes=[128]``: the experiment's name plus the job's other overrides, keys without group."""
    parts = []
    for override in overrides:
        if override.startswith(RUN_NAME_SKIPPED_PREFIXES):
            continue
        key, sep, value = override.lstrip("+~").partition("=")
        parts.append(f"{key.rsplit('.', 1)[-1]}{sep}{value}")
    return " ".join([str(cfg.name), *parts])


def parallel_workers() -> int:
    """How many jobs of this launch run at once on this machine, from the Hydra launcher config."""
    if not HydraConfig.initialized():
        return 1
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return 1
    launcher = hc.launcher
    target = str(launcher.get("_target_", ""))
    cores = _cores()
    if "joblib" in target:
        n_jobs = launcher.get("n_jobs", -1)
        return cores if n_jobs is None or n_jobs <= 0 else min(int(n_jobs), cores)
    if "submitit" in target:
        cpus = launcher.get("cpus_per_task")
        return max(1, cores // int(cpus)) if cpus else cores
    return 1


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def blas_threads(cfg: DictConfig) -> int:
    """trainer.blas_threads, or cores / parallel workers so that workers x threads = cores."""
    if cfg.trainer.blas_threads is not None:
        return int(cfg.trainer.blas_threads)
    return max(1, _cores() // parallel_workers())


class MetricSink:
    """Receives mlp_core's events: buffers metrics for the tracker and drives the progress bar.

    Metrics keep the wall-clock time of their event; they are written when FLUSH_METRICS are waiting or FLUSH_SECONDS
    have passed, so a run costs about steps / 1000 store writes (bulk inserts on sqlite, log_batch calls elsewhere)
    and a killed run keeps most of its history.
    """

    def __init__(self, tracker: RunTracker | None, progress: Any = None):
        # progress: a tqdm-like bar (update, set_postfix, close) or None
        self.tracker = tracker
        self.progress = progress
        self.buffer: list[tuple[str, float, int, int]] = []
        self.last_flush = time.monotonic()

    def __call__(self, event: Any) -> None:
        now_ms = int(time.time() * 1000)
        if isinstance(event, TrainLosses):
            if self.progress is not None:
                self.progress.update(len(event.steps))
            if self.tracker is not None:
                self.buffer.extend(
                    ("train/loss", v, s, now_ms) for s, v in zip(event.steps.tolist(), event.losses.tolist())
                )
        elif isinstance(event, ValidationPoint):
            if self.progress is not None:
                # a refresh per validation point (5 per epoch) is cheap and shows the new accuracy at once
                self.progress.set_postfix(epoch=event.epoch, step=event.step, val_acc=f"{event.val_accuracy:.4f}")
            if self.tracker is not None:
                self.buffer += [
                    ("train/accuracy", float(event.train_accuracy), event.step, now_ms),
                    ("val/loss", float(event.val_loss), event.step, now_ms),
                    ("val/accuracy", float(event.val_accuracy), event.step, now_ms),
                ]
        if len(self.buffer) >= FLUSH_METRICS or time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.tracker is not None and self.buffer:
            self.tracker.log_metrics(self.buffer)
        self.buffer = []
        self.last_flush = time.monotonic()


class _DroppedCtrlC:
    """Raise again a Ctrl-C that Python dropped in a finalizer.

    The SIGINT handler raises KeyboardInterrupt in whatever Python code runs at that moment. When that is a finalizer
    or a weakref callback (SQLAlchemy runs some when the garbage collector frees the objects of a store write), Python
    prints "Exception ignored in ..." and carries on, and the run trained on as if Ctrl-C had never been pressed (seen
    once in 30 Ctrl-Cs at random moments of a run on a busy machine). While this is installed, ``sys.unraisablehook``
    notes such an interrupt instead of printing it, and ``check()`` (at every training event) raises it.
    """

    def __enter__(self) -> "_DroppedCtrlC":
        self.dropped = False
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._hook
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.unraisablehook = self._previous_hook

    def _hook(self, unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            self.dropped = True
        else:
            self._previous_hook(unraisable)

    def check(self) -> None:
        if self.dropped:
            self.dropped = False
            raise KeyboardInterrupt


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


def _write_history(result: Any, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.history_rows())


def write_artifacts(cfg: DictConfig, result: Any, out_dir: Path, title: str) -> list[Path]:
    """config.yaml, history.csv, model.npz and curves.png in the job's output dir."""
    from .plots import plot_curves

    paths = [out_dir / "config.yaml", out_dir / "history.csv", out_dir / "model.npz", out_dir / "curves.png"]
    paths[0].write_text(mask_credentials(OmegaConf.to_yaml(cfg, resolve=True)))
    _write_history(result, paths[1])
    result.model.save(paths[2])
    plot_curves(result, paths[3], title)
    return paths


def _summary_metrics(result: Any) -> list[tuple[str, float, int]]:
    values = {
        "num_parameters": result.num_parameters,
        "best/val_loss": result.best_val_loss,
        "best/val_accuracy": result.best_val_accuracy,
        "final/val_loss": result.final_val_loss,
        "final/val_accuracy": result.final_val_accuracy,
        "epochs": result.epochs,
        "steps": result.num_steps,
        "train_seconds": result.wall_time_s,
    }
    return [(key, float(value), 0) for key, value in values.items()]


def train_and_track(cfg: DictConfig) -> float:
    """One job: validate, open the store, load data, create the run, train, log. Returns best validation loss."""
    from threadpoolctl import threadpool_limits

    validate(cfg)
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra_cfg is not None and hydra_cfg.mode == RunMode.RUN and cfg.sweep_name is not None:
        # without -m Hydra ignores hydra.sweeper.params and would silently train the default config once
        raise ConfigError(f"sweep preset {cfg.sweep_name!r} declares a grid: run it with -m, "
                          f"e.g. mlp-sweep -m +sweep={cfg.sweep_name}")
    overrides = list(hydra_cfg.overrides.task) if hydra_cfg else []
    name = run_name(cfg, overrides)
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    threads = blas_threads(cfg)

    client = experiment_id = parent = None
    if cfg.tracking.enabled:
        client, uri, experiment_id = open_store(cfg.tracking)
        if hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN:
            parent = read_parent(hydra_cfg.sweep.dir)
            if parent is not None and parent["tracking_uri_sha256"] != uri_digest(uri):
                parent = None  # this job logs to another store than the sweep's parent (tracking.uri was swept)
            if parent is not None:
                experiment_id = parent["experiment_id"]
        if parent is None:  # in a sweep the launcher did this once, before any job started
            mark_orphaned_runs(client, experiment_id)
        tags = _run_tags(cfg, container, overrides, threads, parent, hydra_cfg)
        if cfg.tracking.skip_finished:
            existing = find_finished(client, experiment_id, tags["config_hash"])
            if existing is not None:
                return _reuse_finished(client, uri, existing, parent, name)

    try:
        dataset = mlp_core.load_dataset(
            name=_value(cfg.data.name), split=_value(cfg.data.split), root=cfg.data.root,
            normalization=_value(cfg.data.normalization), allow_download=cfg.data.allow_download,
        )
    except ValueError as exc:  # mlp_core.DataError is a ValueError whose message names the source and the problem
        raise DataLoadError(f"Cannot load dataset {_value(cfg.data.name)}/{_value(cfg.data.split)}: "
                            f"{mask_credentials(exc)}") from None
    train_size = len(dataset.train.y)
    validate_against_dataset(cfg, train_size, f"{dataset.name}/{dataset.split}")
    model_cfg, train_cfg = to_core(cfg)
    num_parameters = mlp_core.num_parameters(dataset.input_dim, model_cfg, dataset.num_classes)
    steps_per_epoch = train_size // train_cfg.batch_size

    tracker = None
    if client is not None:
        tags.update(owner_tags())
        tracker = RunTracker.start(client, experiment_id, name, tags, parent_run_id=parent["run_id"] if parent else None,
                                   background_metrics=bool(cfg.tracking.background_metrics))
    sink = MetricSink(tracker)
    try:
        if tracker is not None:
            tracker.log_params(_run_params(container, model_cfg, num_parameters, threads))
            tracker.log_dataset(dataset)
        log.info("%s: %d parameters, %d steps/epoch, %s, %d BLAS threads", name, num_parameters, steps_per_epoch,
                 dataset.source, threads)
        sink.progress = _progress_bar(train_cfg.epochs * steps_per_epoch, name)
        try:
            with _DroppedCtrlC() as dropped_ctrl_c, threadpool_limits(limits=threads, user_api="blas"):

                def on_event(event: Any) -> None:
                    dropped_ctrl_c.check()
                    sink(event)

                result = mlp_core.fit(dataset, model_cfg, train_cfg, on_event=on_event)
                dropped_ctrl_c.check()
        finally:
            sink.progress.close()
        sink.flush()
        paths = write_artifacts(cfg, result, _output_dir(), name)
        if tracker is not None:
            tracker.log_metrics(_summary_metrics(result))
            tracker.set_tags({"stop_reason": result.stop_reason})
            for path in paths:
                tracker.log_artifact(path)
            tracker.end("FINISHED")
    except BaseException as exc:
        if tracker is not None:
            try:
                sink.flush()  # keep the partial history of a failed or interrupted run
                tracker.set_tags({"error": f"{type(exc).__name__}: {mask_credentials(exc)}",
                                  "error_traceback": mask_credentials(traceback.format_exc()[-4000:])})
                tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            except Exception as tracking_exc:  # never hide the job's own error behind a tracking one
                log.warning("could not mark run %s as failed: %s", tracker.run_id, tracking_exc)
        raise
    log.info("%s: stop_reason=%s best val loss %.4f, best val accuracy %.4f after %d steps (%.1f s)", name,
             result.stop_reason, result.best_val_loss, result.best_val_accuracy, result.num_steps, result.wall_time_s)
    best = float(result.best_val_loss)
    return best if math.isfinite(best) else float("inf")  # a diverged run is the worst objective, never NaN


def _reuse_finished(client: Any, uri: str, run: Any, parent: dict | None, name: str) -> float:
    """Skip this job: link the FINISHED run of the same config to the sweep and return its objective."""
    link_to_sweep(client, run, parent)
    objective = objective_of(run)
    log.info("%s: skipped, config_hash %s already FINISHED as run %r (%s), best val loss %.4f; "
             "tracking.skip_finished=false reruns it", name, run.data.tags["config_hash"][:12], run.info.run_name,
             run_link(uri, run), objective)
    return objective


def _run_tags(cfg: DictConfig, container: dict, overrides: list[str], threads: int, parent: dict | None,
              hydra_cfg: Any) -> dict[str, str]:
    commit, dirty = git_commit()
    tags = {
        "hydra.overrides": mask_credentials(" ".join(overrides)),
        "config_hash": config_hash(_hash_view(container, threads=threads)),
        "config_hash_noseed": config_hash(_hash_view(container, drop_seed=True, threads=threads)),
        "git_commit": commit,
        "git_dirty": str(dirty).lower() if commit else None,
        "mlflow.source.git.commit": commit,
        "mlflow.source.name": "mlp-sweep",
        "sweep_id": parent["sweep_id"] if parent else None,
        "blas_threads": threads,
        "hydra.output_dir": hydra_cfg.runtime.output_dir if hydra_cfg else None,
        "experiment": cfg.name,
    }
    return {key: str(value) for key, value in tags.items() if value is not None}


def _run_params(container: dict, model_cfg: Any, num_parameters: int, threads: int) -> dict[str, Any]:
    """The resolved config with dotted keys (credentials masked), plus what the config only implies."""
    params = {k: mask_credentials(v) if isinstance(v, str) else v for k, v in flatten(container).items()}
    params["model.effective_hidden_sizes"] = list(model_cfg.hidden_sizes)
    params["num_parameters"] = num_parameters
    params["runtime.blas_threads"] = threads
    return params


def _hash_view(container: dict, drop_seed: bool = False, threads: int | None = None) -> dict:
    """The config as hashed: the model by its effective hidden sizes (hidden_sizes=[64] == width 64 x depth 1).

    ``drop_seed`` gives the key that groups the seeds of one configuration (mean/std bands of a seed sweep).
    ``threads``: the effective BLAS thread count replaces ``trainer.blas_threads``. The thread count changes the
    summation order in the matmuls, so 1 and 2 threads give different loss histories from the same config and seed:
    a different result, which a relaunch that skips finished hashes must not take for this one. The configured value
    (null = cores / workers) would hash null for both, and 1 for a run that is bit-identical to a null one.
    """
    view = dict(container)
    trainer = dict(view["trainer"])
    if drop_seed:
        trainer.pop("seed", None)
    if threads is not None:
        trainer["blas_threads"] = int(threads)
    view["trainer"] = trainer
    model = dict(view["model"])
    model["hidden_sizes"] = list(effective_hidden_sizes(OmegaConf.create(container["model"])))
    model.pop("width", None)
    model.pop("depth", None)
    view["model"] = model
    return view


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra task function of `mlp-sweep`; returns the objective (best validation loss)."""
    try:
        return train_and_track(cfg)
    except CompactHydraException as exc:
        # A single run's setup error (config range, tracking store, data): one sentence and exit 1. Raising would
        # make Hydra echo the overrides, which may hold credentials. In a sweep, raise: the other jobs still run.
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN:
            sys.stderr.write(f"Error: {mask_credentials(exc)}\n")
            _remove_unused_run_dir(Path(HydraConfig.get().runtime.output_dir))
            sys.exit(1)
        raise


def _remove_unused_run_dir(run_dir: Path) -> None:
    """A run refused before training leaves nothing behind: drop the dir if it holds only Hydra's own files."""
    import shutil

    if run_dir.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in (run_dir.parent, run_dir.parent.parent):  # <outputs>/runs/<date>: only if now empty
            with contextlib.suppress(OSError):
                parent.rmdir()
