"""The confirm sweeper's plan and looks (``sweeper.sweep.confirm`` says the procedure and its guarantee): its knobs,
the grid's configs and seeds, the fixed schedule of looks and the corrected level, and what each look decides.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import names
from ..config.checks import ConfigError, expand_grid
from ..config.identity import short_number, swept_keys
from .search import DIRECTIONS, pruning_curve

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
    label: str = ""  # one per config of the grid (``grid_configs``): what the looks and the sentence name it by


def _short_label(overrides: Sequence[str], swept: Sequence[str]) -> str:
    """``width=64 lr=0.1``: the values of the swept keys, as run names show them (4 significant digits)."""
    shown = []
    for line in overrides:
        key, _, value = line.lstrip("+~").partition("=")
        if key in swept:
            shown.append(f"{key.rsplit('.', 1)[-1]}={short_number(value)}")
    return " ".join(shown) or " ".join(overrides) or "(the defaults)"


def _seed_of(line: str) -> int | None:
    key, _, value = line.partition("=")
    return int(value) if key.lstrip("+") == names.SEED_PARAM else None


def job_key(job: Sequence[str], default_seed: int) -> tuple[tuple[str, ...], int]:
    """(the job's overrides but its seed, its seed): jobs with the same first element are one config."""
    seeds = [s for s in map(_seed_of, job) if s is not None]
    return tuple(line for line in job if _seed_of(line) is None), seeds[-1] if seeds else default_seed


def grid_configs(jobs: Sequence[Sequence[str]], default_seed: int) -> list[Config]:
    """The grid's jobs as configs (jobs that differ only in ``trainer.seed``), in grid order, each labelled by its
    swept values; configs whose short labels coincide (values equal to 4 significant digits) by all their overrides."""
    configs: dict[tuple[str, ...], Config] = {}
    swept = [key for key in swept_keys(jobs) if key != names.SEED_PARAM]
    for job in jobs:
        rest, seed = job_key(job, default_seed)
        config = configs.setdefault(rest, Config(list(rest), label=_short_label(rest, swept)))
        if seed not in config.seeds:
            config.seeds.append(seed)
    labels = [c.label for c in configs.values()]
    for c in configs.values():
        if labels.count(c.label) > 1:
            c.label = " ".join(c.overrides)
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
    if "tracking" in config and not config.tracking.enabled:
        raise ConfigError("hydra/sweeper=confirm reads its runs' results from the MLflow store: set "
                          "tracking.enabled=true")
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
