"""`mlp-sweep` (also `python -m sweeper`): the Hydra entry point of the app around mlp_core.

Data flow: YAML (conf/) -> schema-checked config (sweeper.config) -> mlp_core's frozen dataclasses -> ``mlp_core.fit``
-> events -> MLflow (sweeper.tracking). The task function hands each job to its lifecycle (``sweeper.lifecycle``)
and returns the objective, the best validation loss.

Examples:
    mlp-sweep experiment=task3c
    mlp-sweep -m experiment=task2c,task3a,task3b,task3c
    mlp-sweep -m experiment=task3c 'model.hidden_sizes=[32],[64],[128]'
    mlp-sweep -m +sweep=task4_width
"""
from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import signals
from .config.files import config_problem
from .config.schema import register_configs
from .paths import CONF_DIR, outputs_dir, unwritable_reason
from .redact import mask_credentials
from .sweep.trial import TrialLink


def register() -> None:
    """Everything Hydra needs before it composes: the config schema and the outputs-dir resolver. Idempotent."""
    OmegaConf.register_new_resolver("mlp_sweeps.outputs", _usable_outputs_dir, replace=True)
    register_configs()


def _usable_outputs_dir() -> str:
    """outputs_dir() for hydra.run.dir / hydra.sweep.dir; exits with one sentence if no directory can be made there.

    Hydra creates the job's dir before our task function runs, and a failure there would end in a traceback.
    """
    path = outputs_dir()
    why = unwritable_reason(path)
    if why is not None:
        sys.stderr.write(f"Error: cannot create the outputs directory {path}: {why}; "
                         "set MLP_SWEEPS_OUTPUTS to a writable directory\n")
        sys.exit(1)
    return str(path)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def task(cfg: DictConfig) -> float:
    """Hydra task function of `mlp-sweep` (every launcher runs it, in-process or in its workers); returns the
    objective (best validation loss, or a search trial's objective)."""
    # imported when a job runs, not for --help or --cfg: the lifecycle brings NumPy and mlp_core (about 0.3 s)
    from . import lifecycle

    try:
        return lifecycle.train_and_track(cfg, TrialLink.of_job)
    except KeyboardInterrupt:
        signals.requeue_if_preempted()  # a Slurm job of submitit: requeued (SystemExit here), or ended for good (raises)
        raise
    except CompactHydraException as exc:
        # A single run's setup error (config range, tracking store, data): one sentence and exit 1. Raising would
        # make Hydra echo the overrides, which may hold credentials. In a sweep, raise: the other jobs still run.
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN:
            sys.stderr.write(f"Error: {mask_credentials(exc)}\n")
            _remove_unused_run_dir(Path(HydraConfig.get().runtime.output_dir))
            sys.exit(1)
        raise


def sweeper_knobs() -> dict[str, list[str]]:
    """The config keys of this project's sweepers, by their ``hydra/sweeper`` name (their knobs and the grid or space)."""
    from dataclasses import fields

    from .sweep import confirm_plan, search

    found = {"confirm": [f.name for f in fields(confirm_plan.Settings)] + ["params"]}
    found.update({name: [f.name for f in fields(search.Settings)] + ["params"] for name in search.SAMPLERS})
    return found


def main() -> None:
    """Console entry point of `mlp-sweep`: register the schema and resolver, then hand over to Hydra.

    Ctrl-C and SIGTERM end the run (and a sweep's parent) KILLED with what was logged, then exit with 128 + the
    signal's number and one line instead of a traceback.
    """
    problem = config_problem(CONF_DIR, sys.argv[1:], sweeper_knobs())  # YAML syntax, headers, key typos: first
    if problem is not None:
        sys.stderr.write(f"Error: {problem}\n")
        sys.exit(1)
    register()
    signals.install()
    try:
        task()
    except ValueError as exc:
        if not str(exc).startswith("Only one of --run, --multirun"):
            raise
        # Hydra's own check of its mode flags, raised before any composition (e.g. `-m ... --cfg job`)
        sys.stderr.write(f"Error: {exc}; inspect one job's config without -m (mlp-sweep +sweep=<name> --cfg job), "
                         "or list a sweep's jobs with -m ... hydra/launcher=dryrun\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write(f"mlp-sweep: interrupted by {signals.received_name()}; runs in progress are marked KILLED with the metrics "
                         "logged so far (relaunch the same command to resume)\n")
        sys.exit(signals.exit_code())


def _remove_unused_run_dir(run_dir: Path) -> None:
    """A run refused before training leaves nothing behind: drop the dir if it holds only Hydra's own files."""
    if run_dir.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in (run_dir.parent, run_dir.parent.parent):  # <outputs>/runs/<date>: only if now empty
            with contextlib.suppress(OSError):
                parent.rmdir()
