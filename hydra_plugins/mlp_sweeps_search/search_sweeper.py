"""Hydra plugin shell of the search sweeper: ``mlp-sweep -m hydra/sweeper=tpe 'optimizer.lr=tag(log, interval(0.003,
0.3))'``. One sweeper, two configs (``random``, ``tpe``) that differ in the sampler.

The logic lives in ``sweeper.sweep.study`` (the loop) and ``sweeper.sweep.search`` (space and knobs); this module only
registers the configs and delegates. The config's knobs are the fields of ``search.Settings``, declared there once with
their defaults and checks; the config adds the sweeper's ``_target_`` and the search space (``params``).
"""
import dataclasses
import typing
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sweeper.launchers import SweeperKind
from sweeper.sweep import search, study

_KNOB_TYPES = typing.get_type_hints(search.Settings)
SearchSweeperConf = dataclasses.make_dataclass("SearchSweeperConf", [
    ("_target_", str, dataclasses.field(default=SweeperKind.SEARCH.value)),
    *[(knob.name, _KNOB_TYPES[knob.name], dataclasses.field(default=knob.default))
      for knob in dataclasses.fields(search.Settings)],
    ("params", Dict[str, str], dataclasses.field(default_factory=dict)),
], namespace={"__module__": __name__})  # pickled by reference in configs sent to workers (joblib, submitit)

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
        return study.run_search(self.config, self.launcher, arguments)
