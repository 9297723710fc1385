"""Which runs a report covers: one selection for the sweep's own summary, the report command and the tests.

A sweep's runs are the children it launched (tag ``mlflow.parentRunId`` = its parent run) plus the FINISHED runs of
earlier launches that it reused instead of rerunning them (tag ``sweeper.names.sweep_link_tag(sweep_id)`` = its parent
run id, see sweeper.tracking.resume). Selecting by parent run and selecting by sweep id give the same runs.
Sweep parents hold no curves and are never part of a selection.
"""
from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sweeper import names
from sweeper.tracking.queries import all_experiment_ids, all_of, search_all_runs, tag_equals

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)


class SelectionError(LookupError):
    """What the selection names does not exist (a parent run or an experiment); the message says what does."""


def drop_parents(runs: Sequence[Run]) -> list[Run]:
    """`runs` without sweep parents: runs with the sweep-parent role tag, or the parent of another run in `runs`."""
    parents = {r.data.tags.get(names.PARENT_RUN_ID) for r in runs}
    return [r for r in runs
            if r.info.run_id not in parents and r.data.tags.get(names.ROLE) != names.ROLE_SWEEP_PARENT]


def _union(*selections: list[Run]) -> list[Run]:
    """The runs of all selections, each once, oldest first."""
    by_id: dict[str, Run] = {}
    for runs in selections:
        for run in runs:
            by_id.setdefault(run.info.run_id, run)
    return sorted(by_id.values(), key=lambda r: r.info.start_time or 0)


def _sweep_of_parent(client: Any, parent_run_id: str, filter_string: str | None) -> tuple[list[Run], str]:
    from mlflow.exceptions import MlflowException

    try:
        parent = client.get_run(parent_run_id)
    except MlflowException as exc:
        raise SelectionError(f"parent run {parent_run_id!r} not found: {exc.message}") from exc
    experiments = [parent.info.experiment_id]
    runs = search_all_runs(client, experiments, all_of(tag_equals(names.PARENT_RUN_ID, parent_run_id), filter_string))
    sweep_id = parent.data.tags.get(names.SWEEP_ID)
    if sweep_id:
        reused = search_all_runs(client, experiments,
                                 all_of(tag_equals(names.sweep_link_tag(sweep_id), parent_run_id), filter_string))
        runs = _union(runs, reused)
    what = f"children of run {parent_run_id} (experiment {parent.info.experiment_id})"
    if not runs and not filter_string and parent.data.tags.get(names.ROLE) != names.ROLE_SWEEP_PARENT:
        log.warning("run %s has no child runs; reporting on the run itself", parent_run_id)
        runs = [parent]
    return runs, what


def sweep_by_ref(client: Any, ref: str) -> tuple[list[Run], str]:
    """The runs of the sweep that ``ref`` names, its sweep dir (``hydra.sweep.dir``), parent run id or sweep id
    (parents left out); raises SelectionError, naming ``ref``, when it names none."""
    from mlflow.exceptions import MlflowException

    from sweeper.handoff import read_parent

    if Path(ref).expanduser().is_dir():
        found = read_parent(Path(ref).expanduser())
        if found is None:
            raise SelectionError(f"the directory {ref} is no sweep dir (it has no {names.PARENT_FILE})")
        ref = found["run_id"]
    try:
        parent = client.get_run(ref)
    except MlflowException:
        parent = None
    if parent is not None and parent.data.tags.get(names.ROLE) == names.ROLE_SWEEP_PARENT:
        runs, what = _sweep_of_parent(client, ref, None)
    else:
        runs, what = _sweep_by_id(client, ref, None)
    runs = drop_parents(runs)
    if not runs:
        raise SelectionError(f"no sweep with parent run id or sweep id {ref!r} in the store (give a sweep dir, a "
                             f"parent run id, or a sweep id: the parent run's tag {names.SWEEP_ID}, e.g. "
                             "2026-11-03_12-00-00-1a2b3c4d)")
    return runs, what


def _sweep_by_id(client: Any, sweep_id: str, filter_string: str | None) -> tuple[list[Run], str]:
    experiments = all_experiment_ids(client)
    launched = search_all_runs(client, experiments, all_of(tag_equals(names.SWEEP_ID, sweep_id), filter_string))
    reused = search_all_runs(client, experiments,
                             all_of(f"tags.`{names.sweep_link_tag(sweep_id)}` LIKE '%'", filter_string))
    what = f"runs tagged {names.SWEEP_ID}={sweep_id!r} or reused by that sweep, in all experiments"
    return _union(launched, reused), what


def _experiment(client: Any, experiment: str, filter_string: str | None) -> tuple[list[Run], str]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = sorted(e.name for e in client.search_experiments(max_results=50))
        raise SelectionError(f"no experiment named {experiment!r}; experiments in the store: "
                             f"{', '.join(known) or 'none'}")
    return search_all_runs(client, [exp.experiment_id], filter_string or ""), f"runs of experiment {experiment!r}"


def select_runs(client: Any, *, sweep_id: str | None = None, parent_run_id: str | None = None,
                experiment: str | None = None, filter_string: str | None = None) -> tuple[list[Run], str]:
    """(runs oldest first, a description of what was searched), sweep parents left out.

    Exactly one of: `parent_run_id` (the sweep of that parent run, or the run itself when it is a plain run without
    children), `sweep_id` (the same runs found by the sweep's id, in any experiment) or `experiment` (its runs).
    `filter_string` (MLflow search syntax) is ANDed to every search. Raises SelectionError when the parent run or the
    experiment does not exist.
    """
    given = sum(bool(selector) for selector in (sweep_id, parent_run_id, experiment))
    if given != 1:
        raise ValueError(f"select runs by exactly one of sweep_id, parent_run_id, experiment; got {given}")
    if parent_run_id:
        runs, what = _sweep_of_parent(client, parent_run_id, filter_string)
    elif sweep_id:
        runs, what = _sweep_by_id(client, sweep_id, filter_string)
    else:
        runs, what = _experiment(client, experiment, filter_string)
    if filter_string:
        what += f" matching filter {filter_string!r}"
    return drop_parents(runs), what
