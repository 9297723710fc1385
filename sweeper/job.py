"""A job's identity and its place in the store: what a job knows before it trains (``Job``), its run's tags and
params, and whether its config already FINISHED (reuse) or must be claimed before it trains (``sweeper.tracking.claims``).
The first steps of a job's lifecycle (``sweeper.lifecycle``), which every launcher drives.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import handoff, names
from .config.checks import ConfigError, validate
from .config.identity import config_label, flatten, legacy_hashes, run_hashes, run_name
from .launchers import blas_threads
from .paths import git_commit
from .redact import mask_credentials
from .tracking.claims import acquire
from .tracking.liveness import mark_orphaned_runs
from .tracking.resume import find_finished, link_to_sweep, objective_of, run_link
from .tracking.store import open_store
from .tracking.store_checks import store_step

if TYPE_CHECKING:
    from hydra.conf import HydraConf
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient
    from mlp_core import FitResult, ModelConfig
    from mlp_core.train import Event

    from .tracking.store import RetryingClient

log = logging.getLogger("sweeper")


# ---------------------------------------------------------------------------------------------------- the job

@dataclass
class Job:
    """What a job knows before it trains: its config as a plain dict, its name, overrides and BLAS threads."""

    cfg: DictConfig
    container: dict
    name: str
    overrides: list[str]
    threads: int
    hydra_cfg: HydraConf | None
    tags: dict[str, str] = field(default_factory=dict)
    reused: bool = False  # an earlier FINISHED run of the same config stands in for this job
    reused_run_id: str | None = None  # that run
    engine: str | None = None  # "population(8)" for a member of a fused population: tagged; hashed up to "("
    swept: list[str] = field(default_factory=list)  # the keys its sweep varies, which lead its name and config label

    @property
    def in_sweep(self) -> bool:
        return self.hydra_cfg is not None and self.hydra_cfg.mode == RunMode.MULTIRUN


class Trial(Protocol):
    """A search job's side of its trial, as a job's lifecycle uses it (``sweeper.sweep.trial.TrialLink``)."""

    def tags(self) -> dict[str, str]: ...
    def reused(self, run: Run) -> float: ...
    def observe(self, event: Event) -> str | None: ...
    def end_tags(self, stop_reason: str) -> dict[str, str]: ...
    def objective(self, metrics: dict[str, float]) -> float: ...


def prepare(cfg: DictConfig) -> Job:
    """Check the config and gather what identifies the job; raises ConfigError before any work."""
    validate(cfg)
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra_cfg is not None and hydra_cfg.mode == RunMode.RUN and cfg.sweep_name is not None:
        # without -m Hydra ignores hydra.sweeper.params and would silently train the default config once
        raise ConfigError(f"sweep preset {cfg.sweep_name!r} declares a grid: run it with -m, "
                          f"e.g. mlp-sweep -m +sweep={cfg.sweep_name}")
    overrides = list(hydra_cfg.overrides.task) if hydra_cfg else []
    in_sweep = hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN
    swept = handoff.read_swept(hydra_cfg.sweep.dir) if in_sweep else []
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return Job(cfg, container, run_name(cfg.name, overrides, swept), overrides, blas_threads(cfg), hydra_cfg,
               swept=swept)


def run_tags(job: Job, parent: dict | None) -> dict[str, str]:
    commit, dirty = git_commit()
    engine = job.engine.partition("(")[0] if job.engine else None  # the population's size does not change the bits
    config_hash, config_hash_noseed = run_hashes(job.container, job.threads, engine)
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
        names.CONFIG_LABEL: config_label(job.cfg.name, job.overrides, config_hash_noseed, job.swept),
        names.ENGINE: job.engine,
    }
    if parent:  # every run of a sweep carries its link tag: the sweep's UI view selects its runs by it
        tags[names.sweep_link_tag(parent[names.SWEEP_ID])] = parent["run_id"]
    return {key: str(v) for key, v in tags.items() if v is not None}


def run_params(job: Job, model_cfg: ModelConfig, num_parameters: int) -> dict[str, Any]:
    """The resolved config with dotted keys (credentials masked), plus what the config only implies.

    The model's shape is logged as trained: ``model.hidden_sizes`` is the effective list (the config's is null for a
    width x depth model) and ``model.width``/``model.depth``/``model.num_hidden_layers`` are numbers (the widest layer
    and the layer count), so that the UI's parallel-coordinates plot gets numeric axes. Run identity is unaffected: it
    hashes the config (sweeper.config.identity), never these params.
    """
    params = {k: mask_credentials(v) if isinstance(v, str) else v for k, v in flatten(job.container).items()}
    sizes = list(model_cfg.hidden_sizes)
    params[names.EFFECTIVE_HIDDEN_SIZES_PARAM] = sizes
    params[names.HIDDEN_SIZES_PARAM] = sizes
    params[names.WIDTH_PARAM] = max(sizes, default=0)
    params[names.DEPTH_PARAM] = len(sizes)
    params[names.NUM_HIDDEN_LAYERS_PARAM] = len(sizes)
    params[names.NUM_PARAMETERS] = num_parameters
    params[names.BLAS_THREADS_PARAM] = job.threads
    return params


def summary_metrics(result: FitResult) -> list[tuple[str, float, int]]:
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


def objective(result: FitResult) -> float:
    """The value a job returns to Hydra: the best validation loss; a diverged run is the worst, never NaN."""
    best = float(result.best_val_loss)
    return best if math.isfinite(best) else float("inf")


# ---------------------------------------------------------------------------------------------------- the store

@dataclass
class Store:
    client: MlflowClient | RetryingClient  # what tracking.store.open_store gives
    uri: str
    experiment_id: str
    parent: dict | None


def open_tracking(job: Job) -> Store:
    """Open the store (and the sweep's parent handoff); mark orphaned runs when no sweep launcher did it already."""
    client, uri, experiment_id = open_store(job.cfg.tracking)
    parent = handoff.parent_in(job.hydra_cfg.sweep.dir, uri) if job.in_sweep else None
    if parent is not None:
        experiment_id = parent["experiment_id"]
    else:  # in a sweep the launcher did this once, before any job started
        with store_step(uri, "looking for orphaned runs"):
            mark_orphaned_runs(client, experiment_id)
    return Store(client, uri, experiment_id, parent)


def reuse_finished(job: Job, store: Store, trial: Trial | None = None) -> float | None:
    """If this config already FINISHED (also under an older release's hash), link that run to the sweep and return
    its objective (a search trial's objective when the job is one); None when the job must train."""
    run = find_finished(store.client, store.experiment_id, config_hashes(job))
    return None if run is None else reuse(job, store, run, "already FINISHED", trial)


def config_hashes(job: Job) -> list[str]:
    """The job's config_hash, then the hashes older releases gave the same config (none had engines)."""
    legacy = legacy_hashes(job.container, job.threads) if job.engine is None else []
    return [job.tags[names.CONFIG_HASH], *legacy]


def reuse(job: Job, store: Store, run: Run, how: str, trial: Trial | None = None) -> float:
    job.reused_run_id = run.info.run_id
    link_to_sweep(store.client, run, store.parent, job.tags.get(names.CONFIG_LABEL))
    result = trial.reused(run) if trial is not None else objective_of(run)
    log.info("%s: skipped, config_hash %s %s as run %r (%s), best val loss %.4f; "
             "tracking.skip_finished=false reruns it", job.name, run.data.tags[names.CONFIG_HASH][:12], how,
             run.info.run_name, run_link(store.uri, run), result)
    return result


def claim_run(job: Job, store: Store, tags: dict[str, str],
              trial: Trial | None = None) -> tuple[str | None, float | None]:
    """(run id to train in, None), or (None, objective) when the config FINISHED elsewhere while this job waited its
    turn (``sweeper.tracking.claims``). Without skip_finished the run is created without a claim: a forced rerun."""
    if store.parent:
        tags[names.PARENT_RUN_ID] = store.parent["run_id"]
    if not job.cfg.tracking.skip_finished:
        return store.client.create_run(store.experiment_id, run_name=job.name, tags=tags).info.run_id, None
    claim = acquire(store.client, store.experiment_id, job.name, tags, job.tags[names.CONFIG_HASH], store.uri)
    if claim.reused is not None:
        return None, reuse(job, store, claim.reused, "FINISHED elsewhere while this job waited", trial)
    return claim.run_id, None


def open_job(cfg: DictConfig, engine: str | None = None) -> tuple[Job, Store | None, float | None]:
    """Validate, open the store, tag; (job, store or None, the objective of a FINISHED run of this config or None)."""
    job = prepare(cfg)
    job.engine = engine
    store, reused = track_job(job)
    return job, store, reused


def track_job(job: Job, trial: Trial | None = None) -> tuple[Store | None, float | None]:
    """Open the job's store and tag it; (store or None, the objective of a FINISHED run of this config or None)."""
    if not job.cfg.tracking.enabled:
        return None, None
    store = open_tracking(job)
    job.tags = {**run_tags(job, store.parent), **(trial.tags() if trial else {})}
    if job.cfg.tracking.skip_finished:
        reused = reuse_finished(job, store, trial)
        if reused is not None:
            job.reused = True
            return store, reused
    return store, None
