"""Warm start of a search (``hydra.sweeper.warm_start=<sweep id | parent run id>``): the FINISHED runs of an earlier
sweep, grid or search, enter the study as completed trials, without retraining.

A run enters when it lies in the search's space and is the search's config apart from the space's values and the seed:
- every key of the space has a value among the run's params, inside its distribution (a float or integer within its
  bounds, a categorical or grid value among the choices);
- composing the search's job with the run's values gives the run's ``config_hash_noseed`` (computed with the run's
  own BLAS threads and engine): another preset, data set, epoch count or any other fixed value is another config;
- it has a finite objective and was not pruned (a pruned run's objective is of a partly trained network).
Each entered trial names its run (user attribute ``names.WARM_START_ATTR``), so relaunching the same command adds
nothing twice. They are prior knowledge: ``n_trials`` counts the trials the search trains itself.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from .. import names
from ..config.checks import ConfigError

log = logging.getLogger(__name__)


def earlier_runs(config: Any, ref: str) -> list[Any]:
    """The runs of the earlier sweep ``ref``; ConfigError (one sentence) when the store has no such sweep."""
    from ..reporting.selection import SelectionError, sweep_by_ref
    from ..tracking.store import open_store

    if not config.get("tracking") or not config.tracking.enabled:
        raise ConfigError("hydra.sweeper.warm_start reads the earlier sweep from the MLflow store: set "
                          "tracking.enabled=true")
    client, _, _ = open_store(config.tracking)
    try:
        runs, _ = sweep_by_ref(client, ref)
    except SelectionError as exc:
        raise ConfigError(f"hydra.sweeper.warm_start={ref} is invalid: {exc}") from None
    return runs


def _value_in(dist: Any, text: str) -> tuple[bool, Any]:
    """(inside, the value as the distribution holds it) of a run's param text."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        found = [choice for choice in dist.choices if str(choice) == text]
        return (True, found[0]) if found else (False, None)
    try:
        number = int(text) if isinstance(dist, IntDistribution) else float(text)
    except ValueError:
        return False, None
    return dist.low <= number <= dist.high, number


def _config_hash_noseed(config: Any, overrides: list[str], threads: int, engine: str | None) -> str:
    """The config_hash_noseed a job of these overrides would have with ``threads`` BLAS threads and ``engine``."""
    from omegaconf import OmegaConf

    from ..config.compose import compose_job
    from ..config.identity import HASH_EXCLUDED_KEYS, run_hashes

    cfg = compose_job(config, overrides, keep=False)
    container = {key: OmegaConf.to_container(cfg[key], resolve=True, enum_to_str=True) if OmegaConf.is_config(
        cfg[key]) else cfg[key] for key in cfg if key not in HASH_EXCLUDED_KEYS}
    return run_hashes(container, threads, engine)[1]


def add_warm_trials(study: Any, config: Any, space: Any, objective: str, ref: str) -> int:
    """Add the earlier sweep's runs that fit (module docstring) to ``study``; returns how many were added."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    known = {t.user_attrs.get(names.WARM_START_ATTR) for t in study.get_trials(deepcopy=False)}
    distributions = {key: CategoricalDistribution(values) for key, values in space.grid.items()}
    distributions.update(space.distributions)
    skipped = {"outside the space": 0, "another config": 0, "pruned or no finite objective": 0, "not FINISHED": 0}
    trials, already = [], 0
    for run in sorted(earlier_runs(config, ref), key=lambda r: r.info.start_time or 0):
        if run.info.run_id in known:
            already += 1
            continue
        if run.info.status != "FINISHED":
            skipped["not FINISHED"] += 1
            continue
        value = run.data.metrics.get(objective)
        if (value is None or not math.isfinite(value)
                or run.data.tags.get(names.STOP_REASON) == names.STOP_PRUNED):
            skipped["pruned or no finite objective"] += 1
            continue
        params, inside = {}, True
        for key, dist in distributions.items():
            text = run.data.params.get(key)
            ok, params[key] = _value_in(dist, text) if text is not None else (False, None)
            inside = inside and ok
        if not inside:
            skipped["outside the space"] += 1
            continue
        overrides = space.fixed + [f"{space.prefixes[key]}={run.data.params[key]}" for key in distributions]
        threads = int(run.data.tags.get(names.BLAS_THREADS) or 1)
        engine = run.data.tags.get(names.ENGINE, "").partition("(")[0] or None
        if _config_hash_noseed(config, overrides, threads, engine) != run.data.tags.get(names.CONFIG_HASH_NOSEED):
            skipped["another config"] += 1
            continue
        trials.append(optuna.trial.create_trial(params=params, distributions=distributions, value=float(value),
                                                user_attrs={names.WARM_START_ATTR: run.info.run_id}))
    study.add_trials(trials)
    why = ", ".join(f"{n} {what}" for what, n in skipped.items() if n)
    log.info("warm start from %s: %d run(s) entered the study as trials%s%s", ref, len(trials),
             f", {already} entered before" if already else "", f", {sum(skipped.values())} skipped ({why})" if why
             else "")
    return len(trials)


def is_warm(trial: Any) -> bool:
    """A trial that an earlier sweep's run entered (not trained by this search)."""
    return names.WARM_START_ATTR in trial.user_attrs
