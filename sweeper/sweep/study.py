"""The ask-and-tell loop of the search sweeper (``hydra/sweeper=random|tpe``; the space and knobs: ``search``).

``run_search`` checks the space, opens (or continues) the study, marks the trials a killed launch left running as
failed and queues them again with the same values (a trial names the launch that asked it, with the owner tags of
``sweeper.tracking.liveness``: the trials of a launch that still runs are left alone), then asks ``n_jobs`` trials
per batch until the study holds ``n_trials`` finished (complete or pruned) trials. Each batch's configs are composed
and checked before it launches. A dry run (``hydra/launcher=dryrun``) prints the space and lists the first batch
from an in-memory study.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from .. import handoff, names
from ..config.checks import ConfigError
from ..launchers import LauncherKind, launcher_of
from ..tracking.liveness import owner_gone, owner_tags
from .search import (Settings, Space, check_space, checked, launch_seed, make_pruner, make_sampler, open_storage,
                     override_value, shared_storage, storage_location, study_name, warmup_steps)

log = logging.getLogger(__name__)


def suggest(trial: Any, space: Space) -> dict[str, str]:
    """The trial's values as override text: grid axes first (fixed by the queued cell), then the sampled ones."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    values = {key: str(trial.suggest_categorical(key, choices)) for key, choices in space.grid.items()}
    for key, dist in space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            values[key] = str(trial.suggest_categorical(key, dist.choices))
        elif isinstance(dist, IntDistribution):
            values[key] = str(trial.suggest_int(key, dist.low, dist.high, log=dist.log))
        else:
            values[key] = override_value(trial.suggest_float(key, dist.low, dist.high, log=dist.log))
    return values


def ask(study: Any, space: Space) -> tuple[Any, list[str]]:
    """One trial and its job's overrides. With grid axes, trial k takes grid combination k mod their count."""
    from optuna.trial import TrialState

    cells = space.cells()
    if space.grid and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        study.enqueue_trial(cells[len(study.get_trials(deepcopy=False)) % len(cells)])
    trial = study.ask()
    for key, value in owner_tags(heartbeat=False).items():  # the launch that tells it (see ``resume``)
        trial.set_user_attr(key, value)
    values = suggest(trial, space)
    return trial, space.fixed + [f"{space.prefixes[key]}={v}" for key, v in values.items()]


def resume(study: Any) -> int:
    """Trials left RUNNING by a killed launch: fail them and queue their values again. A trial whose launch is alive
    (another launch of the same study, running now) is left to it: that launch tells it. A trial without owner
    attributes (asked by an older release) counts as left behind, as it always did. Returns how many are asked again.
    """
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if names.PID not in t.user_attrs or owner_gone(t.user_attrs) is not None]
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
    if stale:
        log.info("study %s: %d trial(s) of an interrupted launch marked FAIL and asked again: %s", study.study_name,
                 len(stale), ", ".join(f"#{t.number}" for t in stale))
    return len(stale)


def finished_count(study: Any) -> int:
    """The trials this search trained to the end (complete or pruned); warm-start trials are not counted."""
    from optuna.trial import TrialState

    from .warm_start import is_warm

    return sum(not is_warm(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                                 TrialState.PRUNED)))


def check_batch(config: Any, batch: Sequence[Sequence[str]], settings: Settings) -> list[int]:
    """Compose and check every job of a batch as the launcher will (a sampled config outside the valid ranges stops
    the search before the batch starts); returns each job's pruning warm-up (``search.warmup_steps``). The launcher
    takes each job's config from this composition (``compose.compose_job``)."""
    from ..config.checks import validate
    from ..config.compose import compose_job

    warmups = []
    for overrides in batch:
        try:
            cfg = compose_job(config, overrides, requests=1)
            checked(cfg, validate)
        except ConfigError as exc:
            raise ConfigError(f"sampled trial {' '.join(overrides)} is invalid, the search stops: {exc}") from None
        warmups.append(warmup_steps(settings, cfg))
    return warmups


def tell(study: Any, trials: Sequence[Any], results: Sequence[Any], settings: Settings) -> list[Any]:
    """Tell each trial its job's outcome (COMPLETE with the objective, PRUNED, or FAIL); returns the failed results."""
    from hydra.core.utils import JobStatus
    from optuna.trial import TrialState

    from .search import objective_value

    stored = {t.number: t for t in study.get_trials(deepcopy=False)}
    failed = []
    for trial, result in zip(trials, results):
        if result.status != JobStatus.COMPLETED:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(result)
        elif names.PRUNED_ATTR in stored[trial.number].user_attrs:
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            study.tell(trial, objective_value(result.return_value, settings.direction), skip_if_finished=True)
    return failed


def handoff_info(name: str, location: str, settings: Settings) -> dict:
    """What every job of the search reads (``handoff.write_search``; the batch adds its trial numbers)."""
    return {"study_name": name, "storage": location, "objective": settings.objective,
            "direction": settings.direction, "pruner": settings.pruner,
            "pruner_startup_trials": settings.pruner_startup_trials}


def run_search(config: Any, launcher: Any, arguments: Sequence[str]) -> list:
    """The sweeper's ``sweep``: returns the batches of ``JobReturn``s, as Hydra's BasicSweeper does."""
    import optuna
    from omegaconf import OmegaConf

    from ..paths import outputs_dir

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings, space = check_space(config, arguments)
    name = study_name(config, settings, space)
    dry = launcher_of(config.hydra) is LauncherKind.DRYRUN
    location = storage_location(settings, name, outputs_dir() / "studies")
    storage = optuna.storages.InMemoryStorage() if dry else open_storage(location)
    study = optuna.create_study(study_name=name, storage=storage, direction=settings.direction,
                                pruner=make_pruner(settings), load_if_exists=True)
    retried = 0 if dry else resume(study)
    if settings.warm_start and not dry:
        from .warm_start import add_warm_trials, is_warm

        add_warm_trials(study, config, space, settings.objective, settings.warm_start)
    own = [t for t in study.get_trials(deepcopy=False) if not settings.warm_start or not is_warm(t)]
    seed = launch_seed(settings.seed, len(own) - retried)
    study.sampler = make_sampler(settings, seed)
    to_ask = settings.n_trials - finished_count(study)
    if dry:
        sys.stdout.write(f"Search space ({settings.sampler}, seed {settings.seed}, {settings.n_trials} trials, "
                         f"{settings.n_jobs} per batch, pruner {settings.pruner}): {space.describe()}\n"
                         f"fixed: {' '.join(space.fixed) or '(none)'}; first batch:\n")
        batch = [ask(study, space)[1] for _ in range(min(settings.n_jobs, settings.n_trials))]
        return [launcher.launch(batch, initial_job_idx=0)]

    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    info = handoff_info(name, location, settings)
    from .study_parent import describe_parent

    describe_parent(config, settings, space, name, location, seed)
    if handoff.read(sweep_dir) is not None:  # the sweep callback counted no jobs (a search has no grid): N is known
        handoff.start(sweep_dir, max(to_ask, 0))
    log.info("study %s (%s): %d of %d trials finished, %d to run; storage %s", name, settings.sampler,
             settings.n_trials - max(to_ask, 0), settings.n_trials, max(to_ask, 0), location)
    with shared_storage(location, storage):
        return _run_batches(config, launcher, study, space, settings, info, sweep_dir, to_ask)


def _run_batches(config: Any, launcher: Any, study: Any, space: Space, settings: Settings, info: dict,
                 sweep_dir: Path, to_ask: int) -> list:
    """Ask, check, launch and tell batches until ``to_ask`` trials have run; then finish the parent run."""
    import optuna

    from .study_parent import finish_parent

    returns, failures, job_idx = [], [], 0
    while to_ask > 0:
        asked = [ask(study, space) for _ in range(min(settings.n_jobs, to_ask))]
        trials, batch = [t for t, _ in asked], [o for _, o in asked]
        try:
            warmups = check_batch(config, batch, settings)
        except ConfigError:
            for trial in trials:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        if settings.pruner != "none":
            for trial, steps in zip(trials, warmups):
                trial.set_user_attr(names.WARMUP_ATTR, steps)
        handoff.write_search(sweep_dir, {**info, "trials": {str(job_idx + i): t.number for i, t in enumerate(trials)}})
        results = launcher.launch(batch, initial_job_idx=job_idx)
        failures += tell(study, trials, results, settings)
        returns.append(results)
        job_idx += len(batch)
        to_ask -= len(batch)
    finish_parent(config, study, settings.objective)
    for result in failures:  # as Hydra's BasicSweeper: a failed job fails the sweep (after the study is complete)
        _ = result.return_value
    return returns
