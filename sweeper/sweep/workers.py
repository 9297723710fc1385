"""How many jobs of a launch share this machine, and so how many BLAS threads each job gets (workers × threads =
cores), read from the Hydra launcher config of the running job."""
from __future__ import annotations

import os
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from .launcher_checks import workers_for


def parallel_workers() -> int:
    """How many jobs of this launch run at once on this machine, from the Hydra launcher config."""
    if not HydraConfig.initialized():
        return 1
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return 1
    launcher = hc.launcher
    target = str(launcher.get("_target_", ""))
    cores = cpu_cores()
    if "joblib" in target:
        n_jobs = launcher.get("n_jobs", -1)
        return cores if n_jobs is None or n_jobs <= 0 else min(int(n_jobs), cores)
    if "population" in target:
        return max(1, min(workers_for(launcher.get("n_workers"), cores), cores))
    if "submitit" in target:
        cpus = launcher.get("cpus_per_task")
        return max(1, cores // int(cpus)) if cpus else cores
    return 1


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def blas_threads(cfg: Any) -> int:
    """trainer.blas_threads, or cores / parallel workers so that workers x threads = cores."""
    if cfg.trainer.blas_threads is not None:
        return int(cfg.trainer.blas_threads)
    return max(1, cpu_cores() // parallel_workers())
