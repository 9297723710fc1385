"""Hydra plugin shell of the confirm sweeper: ``mlp-sweep -m hydra/sweeper=confirm model.width=32,64,128``.

The logic lives in ``sweeper.sweep.confirm``; this module only registers the config and delegates. The config's knobs
are the fields of ``confirm_plan.Settings``, declared there once with their defaults and checks; the config adds the
sweeper's ``_target_`` and the grid (``params``, as Hydra's basic sweeper reads it).
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
from sweeper.sweep import confirm, confirm_plan

_KNOB_TYPES = typing.get_type_hints(confirm_plan.Settings)
ConfirmSweeperConf = dataclasses.make_dataclass("ConfirmSweeperConf", [
    ("_target_", str, dataclasses.field(default=SweeperKind.CONFIRM.value)),
    *[(knob.name, _KNOB_TYPES[knob.name], dataclasses.field(default=knob.default))
      for knob in dataclasses.fields(confirm_plan.Settings)],
    ("params", Optional[Dict[str, str]], dataclasses.field(default=None)),
], namespace={"__module__": __name__})  # pickled by reference in configs sent to workers (joblib, submitit)

ConfigStore.instance().store(group="hydra/sweeper", name="confirm", node=ConfirmSweeperConf, provider="mlp-sweeps")


class ConfirmSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None
        return confirm.run_confirm(self.config, self.launcher, arguments)
