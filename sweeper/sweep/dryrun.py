"""The dry run (``hydra/launcher=dryrun``): every job of the grid composed as a real launcher would, checked, and
listed with its effective hidden sizes, exact parameter count and step budget; nothing is run or logged.

The Hydra plugin (``hydra_plugins/mlp_sweeps_dryrun``) is a thin shell that registers ``DryRunLauncherConf`` and
calls ``launch``. A job whose config is
invalid is listed with its error, and the launch then fails with exit code 1, so a dry run also checks the whole grid.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import CompactHydraException
from hydra.types import HydraContext
from omegaconf import DictConfig, open_dict

from ..config.checks import to_core, validate, value
from ..launchers import LauncherKind

HEADER = ["#", "overrides", "hidden_sizes", "activation", "params", "max steps", "data"]


class DryRunError(CompactHydraException):
    """Some job of the grid has an invalid config (Hydra prints the message without a traceback, exit code 1)."""


@dataclass
class DryRunLauncherConf:
    _target_: str = LauncherKind.DRYRUN.value


def describe_job(cfg: DictConfig) -> dict[str, Any]:
    """Effective architecture, exact parameter count and step budget of one composed job config."""
    from mlp_core import num_parameters, split_sizes  # NumPy: Hydra imports this module for --help too

    validate(cfg)
    model, train = to_core(cfg)
    name, split = value(cfg.data.name), value(cfg.data.split)
    sizes = split_sizes(name, split)
    return {
        "hidden_sizes": list(model.hidden_sizes),
        "activation": model.activation,
        "params": num_parameters(sizes.input_dim, model, sizes.num_classes),
        "max_steps": sizes.train // train.batch_size * train.epochs,
        "data": f"{name}/{split}",
    }


def format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: Sequence[Any]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def launch(config: DictConfig, hydra_context: HydraContext, job_overrides: Sequence[Sequence[str]],
           initial_job_idx: int) -> list[JobReturn]:
    """Compose, check and list every job; returns Hydra ``JobReturn``s (FAILED for invalid jobs), or raises
    ``DryRunError`` after printing the table when a job is invalid."""
    rows, results, failures = [], [], 0
    total_steps = 0
    for offset, overrides in enumerate(job_overrides):
        idx = initial_job_idx + offset
        shown = " ".join(filter_overrides(list(overrides))) or "(defaults)"
        try:
            cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = idx
                cfg.hydra.job.num = idx
            info = describe_job(cfg)
            total_steps += info["max_steps"]
            rows.append([str(idx), shown, str(info["hidden_sizes"]), info["activation"], f"{info['params']:,}",
                         f"{info['max_steps']:,}", info["data"]])
            results.append(JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None))
        except Exception as exc:  # an invalid job is reported in the table, not raised mid-way
            failures += 1
            reason = str(exc).removeprefix("Invalid config: ").rstrip(".")
            rows.append([str(idx), shown, "-", "-", "-", "-", f"INVALID: {reason}"])
            results.append(JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=exc))
    sys.stdout.write(
        f"Dry run: {len(rows)} job(s), at most {total_steps:,} training steps in all; nothing was run or logged.\n"
    )
    sys.stdout.write(format_table(rows, HEADER) + "\n")
    sys.stdout.flush()
    if failures:
        raise DryRunError(f"{failures} of {len(rows)} job(s) have an invalid config (see the table above)")
    return results
