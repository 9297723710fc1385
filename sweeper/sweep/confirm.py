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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import handoff, names
from ..config.checks import ConfigError, expand_grid
from ..config.identity import short_number, swept_keys
from ..launchers import LauncherKind, launcher_of
from .search import DIRECTIONS, pruning_curve

log = logging.getLogger(__name__)

FIRST_LOOK = 3   # new seeds per top config at the first look: a t-test on 3 paired seeds has 2 degrees of freedom
ROUND_SEEDS = 2  # new seeds per top config added by each later round


@dataclass(frozen=True)
class Settings:
    """The knobs of the confirm sweeper (``hydra.sweeper.*``), checked."""

    top_k: int = 3
    max_seeds: int = 10
    confidence: float = 0.95
    objective: str = names.OBJECTIVE
    direction: str | None = None  # None: maximize an accuracy, minimize a loss
    from_sweep: str | None = None  # the configs of an earlier sweep (its sweep id or parent run id) instead of a grid

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, value: Any, valid: str) -> None:
            if not ok:
                raise ConfigError(f"hydra.sweeper.{key}={value!r} is invalid: must be {valid}")

        need(_is_int(self.top_k) and self.top_k >= 2, "top_k", self.top_k,
             "an integer >= 2 (the best and at least one config to compare it with)")
        need(_is_int(self.max_seeds) and self.max_seeds >= 1, "max_seeds", self.max_seeds, "an integer >= 1")
        need(isinstance(self.confidence, float | int) and not isinstance(self.confidence, bool)
             and 0.5 < self.confidence < 1, "confidence", self.confidence, "a number between 0.5 and 1, e.g. 0.95")
        need(self.objective in names.SUMMARY_METRICS, "objective", self.objective,
             "a summary metric: " + ", ".join(names.SUMMARY_METRICS))
        need(self.direction is None or self.direction in DIRECTIONS, "direction", self.direction,
             " or ".join(DIRECTIONS) + ", or null (maximize an accuracy, minimize a loss)")
        need(self.from_sweep is None or isinstance(self.from_sweep, str) and self.from_sweep.strip() != "",
             "from_sweep", self.from_sweep, "an earlier sweep's sweep id or parent run id, or null (the grid)")

    @property
    def maximize(self) -> bool:
        if self.direction is not None:
            return self.direction == "maximize"
        return pruning_curve(self.objective)[1] == "maximize"

    @classmethod
    def from_sweeper(cls, sweeper_cfg: Any) -> Settings:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in dict(sweeper_cfg).items() if k in known})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ------------------------------------------------------------------------------------------------ the plan

@dataclass
class Config:
    """One config of the grid: its overrides without the seed, and the grid's seeds of it."""

    overrides: list[str]
    seeds: list[int] = field(default_factory=list)
    swept: tuple[str, ...] = ()  # the keys the grid varies (seed aside): what names a config

    @property
    def label(self) -> str:
        """``width=64 lr=0.1``: the config's values of the swept keys, as run names show them."""
        shown = []
        for line in self.overrides:
            key, _, value = line.lstrip("+~").partition("=")
            if key in self.swept:
                shown.append(f"{key.rsplit('.', 1)[-1]}={short_number(value)}")
        return " ".join(shown) or " ".join(self.overrides) or "(the defaults)"


def _seed_of(line: str) -> int | None:
    key, _, value = line.partition("=")
    return int(value) if key.lstrip("+") == names.SEED_PARAM else None


def job_key(job: Sequence[str], default_seed: int) -> tuple[tuple[str, ...], int]:
    """(the job's overrides but its seed, its seed): jobs with the same first element are one config."""
    seeds = [s for s in map(_seed_of, job) if s is not None]
    return tuple(line for line in job if _seed_of(line) is None), seeds[-1] if seeds else default_seed


def grid_configs(jobs: Sequence[Sequence[str]], default_seed: int) -> list[Config]:
    """The grid's jobs as configs (jobs that differ only in ``trainer.seed``), in grid order."""
    configs: dict[tuple[str, ...], Config] = {}
    swept = tuple(key for key in swept_keys(jobs) if key != names.SEED_PARAM)
    for job in jobs:
        rest, seed = job_key(job, default_seed)
        config = configs.setdefault(rest, Config(list(rest), swept=swept))
        if seed not in config.seeds:
            config.seeds.append(seed)
    return list(configs.values())


def schedule(grid_seeds: int, max_seeds: int) -> list[int]:
    """The new seeds per top config at each look: 3, 5, 7, ... and the budget (``max_seeds`` minus the grid's)."""
    budget = max_seeds - grid_seeds
    if budget < FIRST_LOOK:
        return []
    looks = list(range(FIRST_LOOK, budget + 1, ROUND_SEEDS))
    return looks if looks[-1] == budget else [*looks, budget]


def corrected_alpha(confidence: float, looks: int, configs: int) -> float:
    """The level of each test: ``1 - confidence`` over every look and every pair of the ``configs`` top configs."""
    return (1 - confidence) / (looks * configs * (configs - 1) / 2)


def new_seeds(used: Sequence[int], count: int) -> list[int]:
    """The ``count`` smallest non-negative integers not in ``used`` (the added seeds, the same for every config)."""
    found, seed, taken = [], 0, set(used)
    while len(found) < count:
        if seed not in taken:
            found.append(seed)
        seed += 1
    return found


@dataclass
class Plan:
    """What the sweeper will do, fixed before the first added seed (``plan``)."""

    settings: Settings
    configs: list[Config]
    jobs: list[list[str]]  # the first round's jobs: the grid's, or the earlier sweep's FINISHED runs
    default_seed: int      # the seed of a job without a trainer.seed override
    grid_seeds: list[int]  # every seed of the grid (a config's seeds are among them)
    looks: list[int]       # new seeds per top config at each look
    k: int                 # top configs that get new seeds
    alpha: float           # the level of each test

    def describe(self) -> str:
        if not self.looks:
            return (f"no seed is added: max_seeds={self.settings.max_seeds} leaves fewer than {FIRST_LOOK} new seeds "
                    f"per config after the grid's {len(self.grid_seeds)}")
        return (f"then the top {self.k} of {len(self.configs)} configs get new seeds, looks after "
                f"{', '.join(map(str, self.looks))} new seeds each, every test at alpha = {self.alpha:.3g} "
                f"(1 - confidence {self.settings.confidence:g} over {len(self.looks)} looks x "
                f"{self.k * (self.k - 1) // 2} pairs)")


def earlier_sweep_jobs(config: Any, ref: str) -> list[list[str]]:
    """The jobs of the FINISHED runs of the earlier sweep ``ref``: each run's own overrides (its tag
    ``names.OVERRIDES``, without ``hydra.*`` and ``tracking.*``, which this launch sets), then this command line's
    overrides. Relaunched as they were, they have the runs' config hashes and are reused, not retrained."""
    from ..reporting.selection import SelectionError, sweep_by_ref
    from ..reporting.tables import split_overrides
    from ..tracking.store import open_store

    if not config.get("tracking") or not config.tracking.enabled:
        raise ConfigError("hydra.sweeper.from_sweep reads the earlier sweep from the MLflow store: set "
                          "tracking.enabled=true")
    grid = expand_grid(config)
    if grid is not None and len(grid) > 1:
        raise ConfigError(f"hydra.sweeper.from_sweep={ref} takes its configs from that sweep: sweep no key on the "
                          f"command line or in hydra.sweeper.params (this one has {len(grid)} jobs)")
    client, uri, _ = open_store(config.tracking)
    try:
        runs, _ = sweep_by_ref(client, ref)
    except SelectionError as exc:
        raise ConfigError(f"hydra.sweeper.from_sweep={ref} is invalid: {exc}") from None
    command_line = list(grid[0]) if grid else []
    mine = {line.split("=", 1)[0].lstrip("+~") for line in command_line}
    jobs, seen = [], set()
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        if run.info.status != "FINISHED":
            continue
        own = [line for line in split_overrides(run.data.tags.get(names.OVERRIDES, ""))
               if not line.lstrip("+~").startswith(("hydra.", "tracking."))
               and line.split("=", 1)[0].lstrip("+~") not in mine]
        if run.data.params.get(names.SEED_PARAM) is not None and not any(_seed_of(line) is not None for line in own):
            own.append(f"{names.SEED_PARAM}={run.data.params[names.SEED_PARAM]}")
        job = [*own, *command_line]
        if tuple(job) not in seen:
            seen.add(tuple(job))
            jobs.append(job)
    if not jobs:
        raise ConfigError(f"hydra.sweeper.from_sweep={ref}: that sweep has no FINISHED run to confirm")
    return jobs


def plan(config: Any) -> Plan:
    """Check the knobs and the grid (or the earlier sweep's configs); raise ConfigError (one sentence) before anything
    exists."""
    settings = Settings.from_sweeper(config.hydra.sweeper)
    jobs = expand_grid(config) if settings.from_sweep is None else earlier_sweep_jobs(config, settings.from_sweep)
    assert jobs is not None, "the confirm sweeper expands its grid as the basic sweeper does"
    default_seed = int(config.trainer.seed) if "trainer" in config else 0
    configs = grid_configs(jobs, default_seed)
    if len(configs) < 2:
        raise ConfigError(f"hydra/sweeper=confirm needs a grid of at least 2 configs to compare, got "
                          f"{len(configs)} ({configs[0].label if configs else 'nothing'}): sweep a key, "
                          "e.g. model.width=32,64")
    grid_seeds = sorted({s for c in configs for s in c.seeds})
    if settings.max_seeds < len(grid_seeds) + FIRST_LOOK:
        raise ConfigError(f"hydra.sweeper.max_seeds={settings.max_seeds} is invalid: the grid runs "
                          f"{len(grid_seeds)} seed(s) per config and the first look needs {FIRST_LOOK} new ones, "
                          f"so it must be >= {len(grid_seeds) + FIRST_LOOK}")
    k = min(settings.top_k, len(configs))
    looks = schedule(len(grid_seeds), settings.max_seeds)
    return Plan(settings, configs, [list(job) for job in jobs], default_seed, grid_seeds, looks, k, corrected_alpha(settings.confidence, len(looks), k))


# ------------------------------------------------------------------------------------------------ the looks

@dataclass
class Look:
    """One look: new seeds per config, each top config's mean over them, and the best against each other."""

    seeds: int
    means: dict[str, float | None]             # config label -> mean objective over the new seeds
    best: str | None
    comparisons: dict[str, dict[str, Any]]     # other config label -> n, difference, p, separated
    separated: bool


def look(plan_: Plan, top: Sequence[Config], values: Mapping[str, Mapping[int, float]], seeds: Sequence[int]) -> Look:
    """Compare the best top config (by its mean over ``seeds``) with each other one, over ``seeds``, at ``plan_.alpha``.
    ``values``: config label -> {seed: objective} (finite values only)."""
    from ..reporting.stats import paired_comparison

    maximize = plan_.settings.maximize
    on = {c.label: {s: v for s, v in values.get(c.label, {}).items() if s in seeds} for c in top}
    means = {label: (math.fsum(v.values()) / len(v) if v else None) for label, v in on.items()}
    ranked = sorted((label for label in means if means[label] is not None), key=means.get, reverse=maximize)
    if not ranked:
        return Look(len(seeds), means, None, {}, False)
    best = ranked[0]
    comparisons, separated = {}, True
    for label in on:
        if label == best:
            continue
        c = paired_comparison(on[best], on[label], maximize, confidence=1 - plan_.alpha)
        ok = c.p_value is not None and c.p_value < plan_.alpha and c.difference > 0
        comparisons[label] = {"n": c.n, "difference": c.difference, "p_value": c.p_value, "separated": ok}
        separated = separated and ok
    return Look(len(seeds), means, best, comparisons, separated)


def sentence(plan_: Plan, looks: Sequence[Look], metric: str) -> str:
    """The outcome in one plain sentence."""
    from ..reporting.labels import format_metric
    from ..reporting.stats import format_p, metric_words

    what = metric_words(metric)
    level = f"{plan_.settings.confidence * 100:g} % familywise confidence"
    if not looks:
        return f"no seed was added ({plan_.describe()})."
    last = looks[-1]
    if last.best is None:
        return f"no top config has a finished run with a finite {what} on the added seeds: nothing is confirmed."
    if last.separated:
        worst = max(c["p_value"] for c in last.comparisons.values())
        margins = ", ".join(f"{label} by {format_metric(c['difference'])}" for label, c in last.comparisons.items())
        largest = "p" if len(last.comparisons) == 1 else "largest p"
        return (f"{last.best} is confirmed best of the top {plan_.k}: it beats {margins} {what} over {last.seeds} "
                f"added seeds ({largest} {format_p(worst).removeprefix('p ')} < alpha {plan_.alpha:.3g}, paired "
                f"t-test; {level}).")
    def p_of(c: dict) -> str:
        return "no p-value" if c["p_value"] is None else format_p(c["p_value"])

    tied = [f"{label} (difference {'-' if c['difference'] is None else format_metric(c['difference'])} {what}, "
            f"{p_of(c)})" for label, c in last.comparisons.items() if not c["separated"]]
    beaten = [f"{label} by {format_metric(c['difference'])} {what} ({p_of(c)})"
              for label, c in last.comparisons.items() if c["separated"]]
    beats = f"it beats {', '.join(beaten)}, but " if beaten else ""
    return (f"{last.best} ranks first: {beats}it is not distinguishable from {', '.join(tied)} after {last.seeds} "
            f"added seeds (alpha {plan_.alpha:.3g}, max_seeds={plan_.settings.max_seeds} spent; {level}).")


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
