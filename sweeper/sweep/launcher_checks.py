"""Checks of the population launcher's knobs, run by the sweep callback before the sweep's parent run is created (the
launcher itself, ``sweeper.sweep.population``, imports the app, which the callback must not)."""
from __future__ import annotations

import numbers
from typing import Any

from hydra.errors import CompactHydraException

POPULATION_TARGET = "hydra_plugins.mlp_sweeps_population.population_launcher.PopulationLauncher"


class PopulationLauncherError(CompactHydraException):
    """A bad launcher setting (printed as one sentence, exit code 1)."""


def check_knobs(max_members: Any, n_workers: Any) -> None:
    for name, value in (("max_members", max_members), ("n_workers", n_workers)):
        if name == "n_workers" and value is None:  # the default: one worker per core
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            more = " (or null: one per core)" if name == "n_workers" else ""
            raise PopulationLauncherError(f"hydra.launcher.{name} must be an integer >= 1{more}, got {value!r}")


def workers_for(n_workers: Any, cores: int) -> int:
    """The number of worker processes: ``n_workers``, or one per core when it is None."""
    return cores if n_workers is None else int(n_workers)


def check_launcher(config: Any) -> None:
    """The knobs of a sweep launched with the population launcher; nothing for other launchers."""
    launcher = config.hydra.launcher
    if str(launcher.get("_target_", "")) == POPULATION_TARGET:
        check_knobs(launcher.get("max_members"), launcher.get("n_workers"))
