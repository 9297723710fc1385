"""The search's MLflow parent run is the study: its params at the start (sampler, seed, space, ...), and at the end
the best trial and the study's figures. The parent itself is created by ``MlflowSweepParent`` like any sweep's; its
summary.md, written at the end by ``finalize_sweep``, is sorted by the study's objective."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .. import names
from ..redact import mask_credentials
from ..handoff import read_parent
from .search import Settings, Space

log = logging.getLogger(__name__)


def _parent(config: Any) -> tuple[Any, str] | None:
    """(client, parent run id) of this sweep, or None when tracking is off."""
    if not config.get("tracking") or not config.tracking.enabled:  # tracking off, or another app's config
        return None
    parent = read_parent(str(config.hydra.sweep.dir))
    if parent is None:
        return None
    from ..tracking.store import open_store

    client, _, _ = open_store(config.tracking)
    return client, parent["run_id"]


def describe_parent(config: Any, settings: Settings, space: Space, study_name: str, storage: str,
                    launch_seed: int) -> None:
    """Log the study's definition as the parent's params (and the objective as tags, for the summary's order)."""
    found = _parent(config)
    if found is None:
        return
    from mlflow.entities import Param, RunTag

    client, run_id = found
    p = names.SEARCH_PARAM_PREFIX
    params = {f"{p}sampler": settings.sampler, f"{p}seed": settings.seed, f"{p}launch_seed": launch_seed,
              f"{p}n_trials": settings.n_trials, f"{p}n_jobs": settings.n_jobs, f"{p}direction": settings.direction,
              f"{p}objective": settings.objective, f"{p}pruner": settings.pruner, f"{p}study_name": study_name,
              f"{p}storage": mask_credentials(storage), f"{p}fixed": " ".join(space.fixed)}
    if settings.sampler == "tpe":
        params[f"{p}n_startup_trials"] = settings.n_startup_trials
    if settings.warm_start:
        params[f"{p}warm_start"] = settings.warm_start
    if settings.pruner != "none":
        params[f"{p}pruner_startup_trials"] = settings.pruner_startup_trials
        params[f"{p}pruner_warmup_steps"] = ("one epoch" if settings.pruner_warmup_steps is None
                                             else settings.pruner_warmup_steps)
    params.update({f"{p}space.{key}": text for key, text in space.texts.items()})
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in list(params.items())[:100]],
                     tags=[RunTag(names.STUDY_NAME, study_name), RunTag(names.SEARCH_OBJECTIVE, settings.objective),
                           RunTag(names.SEARCH_DIRECTION, settings.direction)])
    if not config.get("sweep_name"):  # an ad-hoc search's name would be its whole space (the params hold that),
        # which no figure title or table heading has room for
        searched = ", ".join(key.rsplit(".", 1)[-1] for key in space.texts)
        client.update_run(run_id, name=f"{settings.sampler} search of {searched or 'nothing'}")


def finish_parent(config: Any, study: Any, objective: str) -> None:
    """Tag the parent with the best trial and attach the study's figures; never fails the sweep over them."""
    found = _parent(config)
    if found is None:
        return
    from mlflow.entities import RunTag

    from ..reporting.study_plots import plot_study

    client, run_id = found
    try:
        best = study.best_trial
        client.log_batch(run_id, tags=[RunTag(names.BEST_TRIAL, str(best.number)),
                                       RunTag(names.BEST_TRIAL_VALUE, repr(best.value)),
                                       RunTag(names.BEST_TRIAL_PARAMS, json.dumps(best.params))])
    except ValueError:  # no trial completed
        log.warning("study %s has no completed trial", study.study_name)
    try:
        for path in plot_study(study, Path(str(config.hydra.sweep.dir)) / "study", objective):
            client.log_artifact(run_id, str(path))
    except Exception as exc:  # the figures are a convenience
        log.warning("could not plot study %s: %s", study.study_name, exc)
