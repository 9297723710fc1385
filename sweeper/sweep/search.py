"""Random and TPE search (``hydra/sweeper=random`` / ``hydra/sweeper=tpe``) on Optuna's ask-and-tell API.

The search space is written in Hydra's override grammar, in ``hydra.sweeper.params`` or on the command line:
``choice(...)`` is a categorical parameter, ``interval(a, b)`` a float, ``int(interval(a, b))`` an integer,
``tag(log, interval(a, b))`` log scale; a plain value is passed to every trial; a comma list or ``range(...)`` is a grid
axis, whose combinations the trials take in turn (trial k gets combination k mod the grid's size).

Each batch asks ``n_jobs`` trials, checks their composed configs, and launches them with the configured launcher
(basic, joblib, submitit, Slurm); the jobs report their validation curve to their trial (``sweeper.sweep.trial``) and
return the objective; the batch is told when it returns. The study lives in an Optuna ``JournalStorage`` file (or an
RDB URL), named after the search, so that relaunching the same command continues it: trials a killed launch left
running are marked failed and asked again with the same values, and ``n_trials`` counts the total.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from .. import names
from ..config.checks import ConfigError
from ..config.compose import compose_job
from ..config.keys import unknown_sweep_key
from ..launchers import LauncherKind, launcher_of

log = logging.getLogger(__name__)

SAMPLERS = ("random", "tpe")
PRUNERS = ("none", "median", "successive_halving")
DIRECTIONS = ("minimize", "maximize")
RDB_SCHEMES = ("sqlite:", "postgresql", "mysql", "oracle", "mssql")


@dataclass(frozen=True)
class Settings:
    """The knobs of the search sweeper (``hydra.sweeper.*``), checked."""

    sampler: str = "random"
    n_trials: int = 20
    n_jobs: int = 1
    seed: int = 0
    direction: str = "minimize"
    objective: str = names.OBJECTIVE
    pruner: str = "none"
    n_startup_trials: int = 10
    pruner_startup_trials: int = 5
    pruner_warmup_steps: int | None = None  # None: one epoch (``warmup_steps``)
    study_name: str | None = None
    storage: str | None = None
    warm_start: str | None = None  # an earlier sweep (sweep id or parent run id) whose runs enter as trials

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, value: Any, valid: str) -> None:
            if not ok:
                raise ConfigError(f"hydra.sweeper.{key}={value!r} is invalid: must be {valid}")

        need(self.sampler in SAMPLERS, "sampler", self.sampler, " or ".join(SAMPLERS))
        need(self.pruner in PRUNERS, "pruner", self.pruner, " | ".join(PRUNERS))
        need(self.direction in DIRECTIONS, "direction", self.direction, " or ".join(DIRECTIONS))
        need(self.objective in names.SUMMARY_METRICS, "objective", self.objective,
             "a summary metric: " + ", ".join(names.SUMMARY_METRICS))
        for key in ("n_trials", "n_jobs", "n_startup_trials", "pruner_startup_trials"):
            need(_is_int(getattr(self, key)) and getattr(self, key) >= 1, key, getattr(self, key), "an integer >= 1")
        need(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        need(self.pruner_warmup_steps is None or _is_int(self.pruner_warmup_steps) and self.pruner_warmup_steps >= 0,
             "pruner_warmup_steps", self.pruner_warmup_steps, "an integer >= 0, or null (the first epoch)")
        need(self.warm_start is None or isinstance(self.warm_start, str) and self.warm_start.strip() != "",
             "warm_start", self.warm_start, "an earlier sweep's sweep id or parent run id, or null")
        if self.pruner != "none":
            curve, direction = pruning_curve(self.objective)
            need(direction == self.direction, "direction", self.direction,
                 f"{direction} to prune on {curve} (objective {self.objective})")

    @classmethod
    def from_sweeper(cls, sweeper_cfg: Any) -> Settings:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in dict(sweeper_cfg).items() if k in known})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def pruning_curve(objective: str) -> tuple[str, str]:
    """(the curve a job reports to its trial, the direction that curve is optimised in) for an objective."""
    return (names.VAL_ACCURACY, "maximize") if "accuracy" in objective else (names.VAL_LOSS, "minimize")


# ------------------------------------------------------------------------------------------------ the space

@dataclass
class Space:
    """The parsed search space: sampled parameters, grid axes and fixed overrides, in command-line order."""

    distributions: dict[str, Any] = field(default_factory=dict)  # key -> optuna distribution
    grid: dict[str, list[str]] = field(default_factory=dict)     # key -> values (override text)
    fixed: list[str] = field(default_factory=list)               # override lines passed to every trial
    texts: dict[str, str] = field(default_factory=dict)          # key -> how the user wrote it
    prefixes: dict[str, str] = field(default_factory=dict)       # key -> its override key element (+key, key)

    def cells(self) -> list[dict[str, str]]:
        """Every combination of the grid axes (one empty combination without axes)."""
        cells: list[dict[str, str]] = [{}]
        for key, values in self.grid.items():
            cells = [{**cell, key: v} for cell in cells for v in values]
        return cells

    def describe(self) -> str:
        return "; ".join(f"{key}={text}" for key, text in self.texts.items())


def space_overrides(config: Any, arguments: Sequence[str]) -> list[str]:
    """``hydra.sweeper.params`` then the command line (whose value wins for the same key), as override lines."""
    params = config.hydra.sweeper.get("params") or {}
    return [f"{key}={value}" for key, value in params.items()] + list(arguments)


def parse_space(lines: Sequence[str]) -> Space:
    """Parse override lines into a Space; raises ConfigError naming an unsupported or invalid parameter."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, Transformer
    from hydra.errors import HydraException
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    try:
        overrides = OverridesParser.create().parse_overrides(list(lines))
    except HydraException as exc:
        raise ConfigError(f"cannot parse the search space: {exc}".replace("\n", " ")) from None
    space = Space()
    for override in overrides:
        key, text = override.key_or_group, override.input_line.split("=", 1)[-1]
        for table in (space.distributions, space.grid, space.texts, space.prefixes):
            table.pop(key, None)
        space.fixed = [line for line in space.fixed if _key_of(line) != key]
        if not override.is_sweep_override():
            space.fixed.append(override.input_line)
            continue
        space.texts[key], space.prefixes[key] = text, override.get_key_element()
        value = override.value()
        try:
            if isinstance(value, ChoiceSweep) and not value.simple_form:
                space.distributions[key] = CategoricalDistribution(
                    list(override.sweep_iterator(transformer=Transformer.encode)))
            elif isinstance(value, ChoiceSweep) or override.is_range_sweep():
                space.grid[key] = list(override.sweep_string_iterator())
            elif override.is_interval_sweep():
                log_scale = "log" in value.tags
                if isinstance(value.start, int) and isinstance(value.end, int):
                    space.distributions[key] = IntDistribution(value.start, value.end, log=log_scale)
                else:
                    space.distributions[key] = FloatDistribution(float(value.start), float(value.end), log=log_scale)
            else:
                raise ConfigError(f"search space {override.input_line!r} is not supported: use choice(...), "
                                  "interval(a, b), int(interval(a, b)), tag(log, interval(a, b)), a value or a list")
        except ValueError as exc:  # Optuna's own check, e.g. a log interval that starts at 0
            raise ConfigError(f"search space {override.input_line!r} is invalid: {exc}") from None
    if not space.distributions:  # only grid axes: the trials cycle through the grid (as batches of n_jobs)
        log.warning("the search space samples nothing (only values and grid axes): trials take the grid's "
                    "combinations in turn; sample with choice(...) or interval(a, b)")
    return space


def _key_of(line: str) -> str:
    return line.split("=", 1)[0].lstrip("+~")


def override_value(value: Any) -> str:
    """A sampled value as override text, exact (a float's repr parses back to the same double, so the trained value
    is the one Optuna recorded); run names shorten it (``sweeper.config.identity.run_name``)."""
    return repr(value) if isinstance(value, float) else str(value)


def corner_jobs(space: Space) -> list[tuple[str, list[str]]]:
    """(what, overrides) of the space's extremes: every sampled parameter at its low and high end (every value of a
    categorical one) and every grid value, the others at their low end. Checking these checks the space's bounds."""
    from optuna.distributions import CategoricalDistribution

    def ends(dist: Any) -> list[str]:
        if isinstance(dist, CategoricalDistribution):
            return [str(c) for c in dist.choices]
        return [override_value(dist.low), override_value(dist.high)]

    axes = {key: ends(dist) for key, dist in space.distributions.items()}
    axes.update(space.grid)
    base = {key: values[0] for key, values in axes.items()}
    jobs, seen = [], set()
    for key, values in axes.items():
        for v in values:
            job = {**base, key: v}
            if tuple(job.items()) not in seen:
                seen.add(tuple(job.items()))
                jobs.append((f"{key}={v} (from {key}={space.texts[key]})",
                             space.fixed + [f"{space.prefixes[k]}={val}" for k, val in job.items()]))
    return jobs


_checked: list[tuple[Any, list[str], tuple[Settings, Space]]] = []  # this process's last check: config, task, result


def check_space(config: Any, arguments: Sequence[str] | None = None) -> tuple[Settings, Space]:
    """Check the knobs and compose the space's extremes; raise ConfigError (one sentence) before anything exists.
    The sweep callback checks first, before the store is opened; the sweeper's own check of the same config object
    and arguments then takes that result instead of composing the extremes again."""
    task = list(config.hydra.overrides.task) if arguments is None else list(arguments)
    for seen, seen_task, result in _checked:
        if seen is config and seen_task == task:
            return result
    result = _check_space(config, task)
    _checked[:] = [(config, task, result)]
    return result


def _check_space(config: Any, task: list[str]) -> tuple[Settings, Space]:
    from hydra.errors import ConfigCompositionException

    from ..config.checks import validate

    settings = Settings.from_sweeper(config.hydra.sweeper)
    refuse_population(config)
    space = parse_space(space_overrides(config, task))
    for what, overrides in corner_jobs(space):
        try:
            checked(compose_job(config, overrides, keep=False), validate)
        except (ConfigError, ConfigCompositionException) as exc:
            if (typo := unknown_sweep_key(config)) is not None:  # a misspelled key, named with the closest one
                raise ConfigError(typo) from None
            raise ConfigError(f"the search space is invalid, nothing was started: {what}: {exc}".replace("\n", " "))
    from ..paths import outputs_dir
    from .journal import check_journal

    location = storage_location(settings, study_name(config, settings, space), outputs_dir() / "studies")
    if launcher_of(config.hydra) is not LauncherKind.DRYRUN and not location.startswith(RDB_SCHEMES):  # a dry run keeps its study in memory
        check_journal(Path(location))
    if settings.warm_start and launcher_of(config.hydra) is not LauncherKind.DRYRUN:
        from .warm_start import earlier_runs

        earlier_runs(config, settings.warm_start)  # an unknown sweep is refused before anything exists
    return settings, space


def refuse_population(config: Any) -> None:
    """The population launcher trains a batch in one fused pass that neither reports to the trials nor returns each
    trial's objective: a search on it would tell its trials the wrong values, so it is refused."""
    if launcher_of(config.hydra) is LauncherKind.POPULATION:
        raise ConfigError("hydra/launcher=population cannot run a search (hydra/sweeper=random|tpe): its fused pass "
                          "does not report to the trials; use the basic, joblib, submitit or slurm launcher")


def checked(cfg: Any, validate: Any) -> None:
    """Range-check a composed job config of this app (another app's config, as in Hydra's own sweeper test suite,
    is only composed)."""
    if "model" in cfg and "trainer" in cfg:
        validate(cfg)


# ------------------------------------------------------------------------------------------------ the study

def study_name(config: Any, settings: Settings, space: Space) -> str:
    """``hydra.sweeper.study_name``, or the sweep's name plus a digest of what defines the search, so the same command
    continues the same study and another space or seed starts a new one."""
    if settings.study_name:
        return settings.study_name
    what = {"space": space.texts, "fixed": sorted(space.fixed), "sampler": settings.sampler, "seed": settings.seed,
            "objective": settings.objective, "direction": settings.direction, "pruner": settings.pruner}
    if settings.warm_start:  # a warm-started search is another study; the same command again continues it
        what["warm_start"] = settings.warm_start
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]
    return f"{config.get('sweep_name') or settings.sampler}-{digest}"


def storage_location(settings: Settings, name: str, studies_dir: Path) -> str:
    """An RDB URL as given, else the JournalStorage file: ``hydra.sweeper.storage`` or <outputs>/studies/<name>.journal
    (outside the timestamped sweep dir, so that a relaunch finds it)."""
    if settings.storage and settings.storage.startswith(RDB_SCHEMES):
        return settings.storage
    path = Path(settings.storage) if settings.storage else studies_dir / f"{name}.journal"
    return str(path.resolve())


_shared: dict[str, tuple[int, Any]] = {}  # location -> (pid, storage) of the search running in this process


@contextmanager
def shared_storage(location: str, storage: Any) -> Iterator[None]:
    """While a search runs, its jobs in the same process (basic launcher) open its storage as this one object,
    instead of reading the whole journal again for every trial (an Optuna storage syncs with its backend before
    each read, so it also sees what other processes wrote)."""
    _shared[location] = (os.getpid(), storage)
    try:
        yield
    finally:
        _shared.pop(location, None)


def open_storage(location: str) -> Any:
    """Optuna storage for a location of ``storage_location``; a journal file is created with its directory. The
    running search's own storage when there is one in this process (``shared_storage``)."""
    shared = _shared.get(location)
    if shared is not None and shared[0] == os.getpid():
        return shared[1]
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    if location.startswith(RDB_SCHEMES):
        return optuna.storages.RDBStorage(location)
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    # an open-lock (O_EXCL lock file) works on NFS too, where parallel Slurm jobs share the file
    return JournalStorage(JournalFileBackend(location, lock_obj=JournalFileOpenLock(location)))


def make_pruner(settings: Settings | dict) -> Any:
    """The study's pruner; it judges a trial only from the step its ``names.WARMUP_ATTR`` names on (``warmup_steps``).
    """
    import optuna

    class WarmedUp(optuna.pruners.BasePruner):
        """Judges a trial with ``pruner`` from its own warm-up step on (trials of one search may differ in it)."""

        def __init__(self, pruner: Any) -> None:
            self.pruner = pruner

        def prune(self, study: Any, trial: Any) -> bool:
            step = trial.last_step
            if step is None or step < int(trial.user_attrs.get(names.WARMUP_ATTR, 0)):
                return False
            return bool(self.pruner.prune(study, trial))

    s = settings if isinstance(settings, dict) else asdict(settings)
    if s["pruner"] == "median":
        return WarmedUp(optuna.pruners.MedianPruner(n_startup_trials=s["pruner_startup_trials"]))
    if s["pruner"] == "successive_halving":
        return WarmedUp(optuna.pruners.SuccessiveHalvingPruner())
    return optuna.pruners.NopPruner()


def warmup_steps(settings: Settings, cfg: Any) -> int:
    """The first step at which a trial of the composed job config ``cfg`` may be judged: ``pruner_warmup_steps``, by
    default one epoch. The first validation point comes after a single update, when every trial's loss is still its
    random init's, and even the early ones rank slow starters low: on the task3c search, judging from step 125 pruned
    the eventual best trial, judging from the end of the first epoch kept it (README, "What pruning saves")."""
    if settings.pruner_warmup_steps is not None:
        return settings.pruner_warmup_steps
    if "data" not in cfg or "trainer" not in cfg:  # another app's config (Hydra's own sweeper test suite)
        return 0
    from mlp_core import split_sizes

    from ..config.checks import value

    return split_sizes(value(cfg.data.name), value(cfg.data.split)).train // int(cfg.trainer.batch_size)


def make_sampler(settings: Settings, launch_seed: int) -> Any:
    import optuna

    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=launch_seed, n_startup_trials=settings.n_startup_trials)
    return optuna.samplers.RandomSampler(seed=launch_seed)


def launch_seed(seed: int, trials_so_far: int) -> int:
    """The sampler's seed for a launch: the study's seed for a fresh study; a resumed study draws a new stream (a
    sampler re-seeded as at the start would propose the first trials again)."""
    if trials_so_far == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, trials_so_far]).generate_state(1)[0])


def objective_value(value: Any, direction: str) -> float:
    """A job's objective as Optuna is told it: a missing or NaN value is the worst (Optuna refuses NaN)."""
    v = float(value) if value is not None else math.nan
    if math.isnan(v):
        return math.inf if direction == "minimize" else -math.inf
    return v
