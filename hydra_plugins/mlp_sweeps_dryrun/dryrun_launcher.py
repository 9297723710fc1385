"""Hydra plugin shell of the dry-run launcher: ``mlp-sweep -m +sweep=task4_width hydra/launcher=dryrun``.

The config and the logic live in ``sweeper.sweep.dryrun``; this module only registers the config and delegates.
"""
from typing import Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sweeper.sweep import dryrun

ConfigStore.instance().store(group="hydra/launcher", name="dryrun", node=dryrun.DryRunLauncherConf,
                             provider="mlp-sweeps")


class DryRunLauncher(Launcher):
    def __init__(self) -> None:
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        return dryrun.launch(self.config, self.hydra_context, job_overrides, initial_job_idx)
