"""Which launcher and which sweeper run this sweep, and what that means for a job: how many jobs share this machine,
and so how many BLAS threads each gets (workers × threads = cores).

The one module that reads ``hydra.launcher._target_`` and ``hydra.sweeper._target_``; everything else asks
``launcher_of`` / ``sweeper_of``. The values are the ``_target_`` strings of the plugins' configs (Hydra's own, the
joblib and submitit plugins', and this project's, whose config dataclasses take them from here).
"""
from __future__ import annotations

import os
from enum import Enum
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

if TYPE_CHECKING:
    from omegaconf import DictConfig


class LauncherKind(Enum):
    BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    SUBMITIT_LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    SUBMITIT_SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    POPULATION = "hydra_plugins.mlp_sweeps_population.population_launcher.PopulationLauncher"
    DRYRUN = "hydra_plugins.mlp_sweeps_dryrun.dryrun_launcher.DryRunLauncher"
    OTHER = "another launcher"  # a launcher plugin this project does not know: one job at a time is assumed


class SweeperKind(Enum):
    BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    SEARCH = "hydra_plugins.mlp_sweeps_search.search_sweeper.SearchSweeper"
    CONFIRM = "hydra_plugins.mlp_sweeps_confirm.confirm_sweeper.ConfirmSweeper"
    OTHER = "another sweeper"


def _kind(enum: type[LauncherKind] | type[SweeperKind], node: DictConfig) -> LauncherKind | SweeperKind:
    target = str(node.get("_target_", ""))
    return next((kind for kind in enum if kind.value == target), enum.OTHER)


def launcher_of(hydra_cfg: DictConfig) -> LauncherKind:
    """The launcher of a sweep; ``hydra_cfg`` is the ``hydra`` node (``config.hydra`` or ``HydraConfig.get()``)."""
    return _kind(LauncherKind, hydra_cfg.launcher)


def sweeper_of(hydra_cfg: DictConfig) -> SweeperKind:
    """The sweeper of a sweep; ``hydra_cfg`` is the ``hydra`` node (``config.hydra`` or ``HydraConfig.get()``)."""
    return _kind(SweeperKind, hydra_cfg.sweeper)


def parallel_workers() -> int:
    """How many jobs of this launch run at once on this machine, from the running job's Hydra launcher config."""
    if not HydraConfig.initialized():
        return 1
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return 1
    launcher, kind, cores = hc.launcher, launcher_of(hc), cpu_cores()
    if kind is LauncherKind.JOBLIB:
        n_jobs = launcher.get("n_jobs", -1)
        return cores if n_jobs is None or n_jobs <= 0 else min(int(n_jobs), cores)
    if kind is LauncherKind.POPULATION:
        return max(1, min(workers_for(launcher.get("n_workers"), cores), cores))
    if kind in (LauncherKind.SUBMITIT_LOCAL, LauncherKind.SUBMITIT_SLURM):
        cpus = launcher.get("cpus_per_task")
        return max(1, cores // int(cpus)) if cpus else cores
    return 1


def workers_for(n_workers: int | None, cores: int) -> int:
    """The population launcher's worker processes: ``n_workers``, or one per core when it is None."""
    return cores if n_workers is None else int(n_workers)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def blas_threads(cfg: DictConfig) -> int:
    """trainer.blas_threads, or cores / parallel workers so that workers x threads = cores."""
    if cfg.trainer.blas_threads is not None:
        return int(cfg.trainer.blas_threads)
    return max(1, cpu_cores() // parallel_workers())
