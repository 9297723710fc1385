"""The population launcher's config: its knobs and their defaults (one dataclass, which the Hydra plugin registers)
and their checks (run by the sweep callback before the sweep's parent run is created, and by the launcher)."""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hydra.errors import CompactHydraException

from ..launchers import LauncherKind, launcher_of

if TYPE_CHECKING:
    from omegaconf import DictConfig


@dataclass
class PopulationLauncherConf:
    _target_: str = LauncherKind.POPULATION.value
    max_members: int = 16  # jobs trained together in one fused pass, at most
    # processes that train populations side by side (null: one per core); BLAS threads per job = cores / n_workers
    n_workers: int | None = None


class PopulationLauncherError(CompactHydraException):
    """A bad launcher setting (printed as one sentence, exit code 1)."""


def check_knobs(max_members: Any, n_workers: Any) -> None:
    for name, value in (("max_members", max_members), ("n_workers", n_workers)):
        if name == "n_workers" and value is None:  # the default: one worker per core
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            more = " (or null: one per core)" if name == "n_workers" else ""
            raise PopulationLauncherError(f"hydra.launcher.{name} must be an integer >= 1{more}, got {value!r}")


def check_launcher(config: DictConfig) -> None:
    """The knobs of a sweep launched with the population launcher; nothing for other launchers."""
    if launcher_of(config.hydra) is LauncherKind.POPULATION:
        check_knobs(config.hydra.launcher.get("max_members"), config.hydra.launcher.get("n_workers"))
