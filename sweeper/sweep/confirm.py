"""The confirm sweeper (``hydra/sweeper=confirm``): run a grid, then add seeds to its top configs until the best is
told apart from the others at a stated confidence, or the seed budget is spent.

1. **The grid.** Every job of the grid (``hydra.sweeper.params`` and the command line, exactly as Hydra's basic
   sweeper expands them; a ``trainer.seed`` axis gives each config its first seeds) runs as in any sweep: a config
   and seed with a FINISHED run in the store is reused, not retrained.
2. **The top configs.** The grid's configs are ranked by their mean objective over the grid's seeds; the ``top_k``
   best go on. Those seeds chose them, so they take no part in the tests below (a config that ranks first partly by
   luck would carry that luck into a test on the same seeds: the winner's curse).
3. **Added seeds, on a fixed schedule.** Each top config gets the same new seeds (the smallest integers the grid did
   not use), in rounds: the first look after 3 new seeds (the fewest a t-test can say anything with), then 2 more
   seeds per round, up to ``max_seeds`` seeds per config in all. Every added seed is an ordinary run of this sweep,
   launched by the sweep's launcher, reused when it already ran.
4. **The looks.** After each round, the config with the best mean over the new seeds is compared with each other
   top config, paired over the new seeds (``reporting.stats.paired_comparison``: a paired t-test), at the corrected
   level ``alpha' = (1 - confidence) / (looks * pairs)``, with ``pairs = k (k - 1) / 2`` for the k top configs and
   ``looks`` the schedule's length, fixed before the first seed is added. The sweep stops adding seeds once the best
   is separated from every other top config.

**The guarantee** (``docs/confirm.md``): under the paired t-test's assumptions (each seed an independent draw; the
per-seed differences of two configs normal), the probability that the sweeper ever says "A beats B" while A is in fact
not better than B is at most ``1 - confidence``, over all its looks and pairs together. Why: the top configs are chosen
on the grid's seeds, independent of the new seeds; given that choice, each (pair, look) test is a fixed test on the
first n new seeds, wrong with probability at most ``alpha'``; a false statement needs one of the ``looks * pairs``
tests to be wrong (Bonferroni).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import handoff, names
from ..config.checks import ConfigError
from ..launchers import LauncherKind, launcher_of
from .confirm_plan import Config, Look, Plan, job_key, look, new_seeds, plan, sentence

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ the sweep

def _seed_line(config: Any) -> str:
    """The override that sets a job's seed: as the grid wrote it (``+trainer.seed`` for another app's config)."""
    return f"{names.SEED_PARAM}=" if "trainer" in config and "seed" in config.trainer else f"+{names.SEED_PARAM}="


def job_overrides(config_: Config, seed: int, seed_line: str) -> list[str]:
    return [*config_.overrides, f"{seed_line}{seed}"]


def objective_values(config: Any, plan_: Plan, jobs: Mapping[int, tuple[str, int]]) -> dict[str, dict[int, float]]:
    """{config label: {seed: objective}} from the store, for the FINISHED runs of this sweep's jobs ``jobs``
    (job number -> (config label, seed)); a reused run counts under the job that reused it."""
    from ..reporting.selection import select_runs
    from ..reporting.tables import job_number
    from ..tracking.store import open_store

    parent = handoff.read_parent(str(config.hydra.sweep.dir))
    if parent is None:
        raise ConfigError("hydra/sweeper=confirm reads its runs' results from the MLflow store: set "
                          "tracking.enabled=true")
    client, _, _ = open_store(config.tracking)
    runs, _ = select_runs(client, parent_run_id=parent["run_id"])
    reused = handoff.reused_job_numbers(str(config.hydra.sweep.dir))
    values: dict[str, dict[int, float]] = {}
    for run in runs:
        number = reused.get(run.info.run_id)
        if number is None and run.data.tags.get(names.PARENT_RUN_ID) == parent["run_id"]:
            number = job_number(run)
        if number not in jobs or run.info.status != "FINISHED":
            continue
        value = run.data.metrics.get(plan_.settings.objective)
        if value is not None and math.isfinite(value):
            label, seed = jobs[number]
            values.setdefault(label, {})[seed] = float(value)
    return values


def describe_parent(config: Any, plan_: Plan) -> None:
    """The sweep's parent run gets the knobs and the plan as params, and the objective as tags (the summary ranks and
    judges the configs by it, as a search's: ``reporting.verdict.Objective.of_parent``)."""
    parent = handoff.read_parent(str(config.hydra.sweep.dir))
    if parent is None:
        return
    from mlflow.entities import Param, RunTag

    from ..tracking.store import open_store

    client, _, _ = open_store(config.tracking)
    s = plan_.settings
    p = names.CONFIRM_PARAM_PREFIX
    params = {f"{p}top_k": s.top_k, f"{p}max_seeds": s.max_seeds, f"{p}confidence": s.confidence,
              f"{p}objective": s.objective, f"{p}schedule": ",".join(map(str, plan_.looks)),
              f"{p}alpha": f"{plan_.alpha:.6g}"}
    client.log_batch(parent["run_id"], params=[Param(k, str(v)) for k, v in params.items()],
                     tags=[RunTag(names.SEARCH_OBJECTIVE, s.objective),
                           RunTag(names.SEARCH_DIRECTION, "maximize" if s.maximize else "minimize")])


def check_batch(config: Any, batch: Sequence[Sequence[str]]) -> None:
    """Compose and range-check the added seeds' jobs; the launcher then takes these compositions."""
    from ..config.checks import validate
    from ..config.compose import compose_job
    from .search import checked

    for overrides in batch:
        checked(compose_job(config, overrides), validate)


def run_confirm(config: Any, launcher: Any, arguments: Sequence[str]) -> list:
    """The sweeper's ``sweep``: returns the batches of ``JobReturn``s, as Hydra's BasicSweeper does. The grid is the
    config's (``arguments`` are its command-line overrides, which ``config.hydra.overrides.task`` holds too)."""
    plan_ = plan(config)
    seed_line = _seed_line(config)
    by_key = {tuple(c.overrides): c for c in plan_.configs}
    grid = [(by_key[rest], seed) for rest, seed in (job_key(job, plan_.default_seed) for job in plan_.jobs)]
    batch = plan_.jobs  # as the sweep callback composed and checked them: the launcher takes those compositions
    log.info("confirm: %d configs x their grid seeds (%d jobs); %s", len(plan_.configs), len(batch),
             plan_.describe())
    if launcher_of(config.hydra) is LauncherKind.DRYRUN:
        return [launcher.launch(batch, initial_job_idx=0)]
    sweep_dir = Path(str(config.hydra.sweep.dir))
    describe_parent(config, plan_)
    jobs = {number: (c.label, s) for number, (c, s) in enumerate(grid)}
    returns = [launcher.launch(batch, initial_job_idx=0)]
    failures = [r for r in returns[0] if r.status.name != "COMPLETED"]
    values = objective_values(config, plan_, jobs)
    grid_means = {c.label: _mean([values.get(c.label, {}).get(s) for s in c.seeds]) for c in plan_.configs}
    ranked = sorted((c for c in plan_.configs if grid_means[c.label] is not None), key=lambda c: grid_means[c.label],
                    reverse=plan_.settings.maximize)
    top = ranked[:plan_.k]
    result: dict[str, Any] = {"settings": asdict(plan_.settings), "maximize": plan_.settings.maximize,
                              "configs": len(plan_.configs), "grid_seeds": plan_.grid_seeds, "schedule": plan_.looks,
                              "alpha": plan_.alpha, "top": [c.label for c in top], "looks": []}
    looks: list[Look] = []
    if len(top) < 2:
        log.warning("confirm: %d config(s) of the grid have a finished run with a finite %s: nothing to confirm",
                    len(top), plan_.settings.objective)
    else:
        log.info("confirm: top %d by the grid's seeds: %s", len(top), "; ".join(c.label for c in top))
        added = new_seeds(plan_.grid_seeds, plan_.looks[-1] if plan_.looks else 0)
        done = 0
        for count in plan_.looks:
            seeds = added[done:count]
            batch = [job_overrides(c, s, seed_line) for s in seeds for c in top]
            check_batch(config, batch)
            first = len(jobs)
            jobs.update({first + i: (c.label, s) for i, (s, c) in enumerate((s, c) for s in seeds for c in top)})
            handoff.extend(sweep_dir, len(jobs))
            results = launcher.launch(batch, initial_job_idx=first)
            returns.append(results)
            failures += [r for r in results if r.status.name != "COMPLETED"]
            values = objective_values(config, plan_, jobs)
            done = count
            found = look(plan_, top, values, added[:count])
            looks.append(found)
            result["looks"].append(asdict(found))
            log.info("confirm: look %d of %d (%d added seeds): %s", len(looks), len(plan_.looks), count,
                     _look_line(found))
            if found.separated:
                break
    result["sentence"] = sentence(plan_, looks, plan_.settings.objective) if len(top) >= 2 else (
        "fewer than 2 configs of the grid finished: nothing to confirm.")
    result["added_runs"] = len(jobs) - len(grid)
    handoff.write_confirmation(sweep_dir, result)
    log.info("confirm: %s", result["sentence"])
    for failed in failures:  # as Hydra's BasicSweeper: a failed job fails the sweep (after the last look)
        _ = failed.return_value
    return returns


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return math.fsum(finite) / len(finite) if finite else None


def _look_line(found: Look) -> str:
    from ..reporting.stats import format_p

    parts = [f"{label}: {'no p-value' if c['p_value'] is None else format_p(c['p_value'])}"
             f"{' (separated)' if c['separated'] else ''}" for label, c in found.comparisons.items()]
    return f"best {found.best}; against it: " + "; ".join(parts)
