"""Hydra plugin shell of the population launcher: ``mlp-sweep -m +sweep=... hydra/launcher=population``.

The config and the logic live in ``sweeper.sweep.launcher_checks`` and ``sweeper.sweep.population``; this module only
registers the config and delegates.
"""
from typing import Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sweeper.sweep.launcher_checks import PopulationLauncherConf

ConfigStore.instance().store(
    group="hydra/launcher", name="population", node=PopulationLauncherConf, provider="mlp-sweeps"
)


class PopulationLauncher(Launcher):
    def __init__(self, max_members: int, n_workers: Optional[int]) -> None:  # Hydra passes the config's knobs
        self.max_members = max_members
        self.n_workers = n_workers
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # as Hydra's joblib plugin imports its _core: Hydra imports every plugin at start-up (--help too), and the
        # launcher brings the store and a job's set-up (about 0.3 s)
        from sweeper.sweep import population

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        return population.launch(
            self.config, self.hydra_context, self.task_function, job_overrides, initial_job_idx,
            max_members=self.max_members, n_workers=self.n_workers,
        )
