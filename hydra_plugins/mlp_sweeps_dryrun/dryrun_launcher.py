"""A Hydra launcher that runs nothing: it prints the expanded grid as a table and creates no MLflow run.

    mlp-sweep -m +sweep=task4_width hydra/launcher=dryrun

Each job's config is composed exactly as a real launcher would compose it (same sweeper, same overrides), checked
against the schema and the value ranges, and shown with its effective hidden sizes, exact parameter count and the
number of training steps it would run at most (early stopping may end it sooner). A job whose config is invalid is
listed with its error, and the launch then fails with exit code 1, so a dry run is also a check of the whole grid.
"""


import logging
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

TARGET = "hydra_plugins.mlp_sweeps_dryrun.dryrun_launcher.DryRunLauncher"


@dataclass
class DryRunLauncherConf:
    _target_: str = TARGET


ConfigStore.instance().store(group="hydra/launcher", name="dryrun", node=DryRunLauncherConf, provider="mlp-sweeps")


class DryRunError(CompactHydraException):
    """Some job of the grid has an invalid config (Hydra prints the message without a traceback, exit code 1)."""


def is_dry_run(config: DictConfig) -> bool:
    return str(config.hydra.launcher.get("_target_", "")) == TARGET


def describe_job(cfg: DictConfig) -> dict[str, Any]:
    """Effective architecture, exact parameter count and step budget of one composed job config."""
    from mlp_core import num_parameters
    from mlp_core.data import ASSIGNMENT_TRAIN_SIZE, DIGITS_TRAIN_SIZE, STANDARD_VAL_SIZE
    from sweeper.schema import to_core, validate

    validate(cfg)
    model, train = to_core(cfg)
    name, split = _value(cfg.data.name), _value(cfg.data.split)
    if name == "digits":
        input_dim, train_size = 64, DIGITS_TRAIN_SIZE
    else:
        input_dim = 784
        train_size = ASSIGNMENT_TRAIN_SIZE if split == "assignment" else 60_000 - STANDARD_VAL_SIZE
    steps_per_epoch = train_size // train.batch_size
    return {
        "hidden_sizes": list(model.hidden_sizes),
        "activation": model.activation,
        "num_parameters": num_parameters(input_dim, model),
        "max_steps": steps_per_epoch * train.epochs,
        "data": f"{name}/{split}",
    }


def _value(node: Any) -> Any:
    return getattr(node, "value", node)


def format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


class DryRunLauncher(Launcher):
    def __init__(self) -> None:
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        rows, results, failures = [], [], 0
        total_steps = 0
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            shown = " ".join(filter_overrides(list(overrides))) or "(defaults)"
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                with open_dict(cfg):
                    cfg.hydra.job.id = idx
                    cfg.hydra.job.num = idx
                info = describe_job(cfg)
                total_steps += info["max_steps"]
                rows.append([
                    str(idx), shown, str(info["hidden_sizes"]), info["activation"], f"{info['num_parameters']:,}",
                    f"{info['max_steps']:,}", info["data"],
                ])
                results.append(JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None))
            except Exception as exc:  # an invalid job is reported in the table, not raised mid-way
                failures += 1
                reason = str(exc).removeprefix("Invalid config: ").rstrip(".")
                rows.append([str(idx), shown, "-", "-", "-", "-", f"INVALID: {reason}"])
                results.append(JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=exc))
        header = ["#", "overrides", "hidden_sizes", "activation", "params", "max steps", "data"]
        sys.stdout.write(
            f"Dry run: {len(rows)} job(s), at most {total_steps:,} training steps in all; nothing was run or logged.\n"
        )
        sys.stdout.write(format_table(rows, header) + "\n")
        sys.stdout.flush()
        if failures:
            raise DryRunError(f"{failures} of {len(rows)} job(s) have an invalid config (see the table above)")
        return results
