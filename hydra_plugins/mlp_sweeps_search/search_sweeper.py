"""Hydra plugin shell of the search sweeper: ``mlp-sweep -m hydra/sweeper=tpe 'optimizer.lr=tag(log, interval(0.003,
0.3))'``. One sweeper, two configs (``random``, ``tpe``) that differ in the sampler.

The logic lives in ``sweeper.sweep.study`` (the loop) and ``sweeper.sweep.search`` (space and knobs); this module only
registers the configs and delegates.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sweeper.sweep import search, study


@dataclass
class SearchSweeperConf:
    _target_: str = search.TARGET
    sampler: str = "random"             # random | tpe
    n_trials: int = 20                  # finished (complete or pruned) trials in the study, over all launches
    n_jobs: int = 1                     # trials asked per batch: the launcher runs a batch in parallel
    seed: int = 0                       # the sampler's seed
    direction: str = "minimize"         # minimize | maximize
    objective: str = "best/val_loss"    # any summary metric of a run
    pruner: str = "none"                # none | median | successive_halving
    n_startup_trials: int = 10          # TPE: random trials before it models the objective
    pruner_startup_trials: int = 5      # median: trials that finish before any is pruned
    pruner_warmup_steps: Optional[int] = None  # no trial is judged before this step (null: one epoch)
    study_name: Optional[str] = None    # default: the sweep's name + a digest of the space, sampler and seed
    storage: Optional[str] = None       # a journal file path or an RDB URL; default <outputs>/studies/<study>.journal
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="random", node=SearchSweeperConf(sampler="random"),
                             provider="mlp-sweeps")
ConfigStore.instance().store(group="hydra/sweeper", name="tpe", node=SearchSweeperConf(sampler="tpe"),
                             provider="mlp-sweeps")


class SearchSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.hydra_context is not None
        return study.run_search(self.config, self.hydra_context, self.launcher, arguments)
