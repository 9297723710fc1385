"""The population launcher (``hydra/launcher=population``): the jobs of a sweep that can share one fused pass
(``mlp_core.fit_population``) train together, and each is still its own run, recorded exactly like a solo job's.

Flow: every job's config is composed (as Hydra's basic launcher does) and grouped by what a fused pass needs to share
(the data config, ``mlp_core.fusable_key`` and an explicit ``trainer.blas_threads``), at most ``max_members`` jobs a
group. A group of one, or a job whose config cannot be read, runs solo through the app's task function, as with the
basic launcher. A population's members each go through Hydra's ``run_job`` (their own job dir and .hydra files) and
through the same lifecycle as a solo job (``sweeper.lifecycle``): set-up (``job.open_job``: validation, the skip of a
FINISHED config); for the ones left to train, their runs (``lifecycle.start_run``: params, dataset, tags with
``engine=population(K)``); the population trains once; and each member's run is finished at its own RunEnd like a
solo job's (``lifecycle.record_result``: metrics, summary, stop reason, artifacts; FINISHED, or
``lifecycle.end_failed``), its Hydra JobReturn carrying its objective, and its outcome in the sweep's progress
(``handoff.record``). A population claims its members' configs in config-hash order, so that two populations never
wait for each other (``tracking.claims``, "Groups"). ``n_workers`` processes (loky, as Hydra's joblib launcher; by
default one per core, never more than there are groups) share out the groups, each with cores / the workers that
start BLAS threads.

The engine is part of the config hash (``config.identity``): a member's bits differ from a solo run's (by float32
summation order) but not with the other members of its population, so a rerun by this launcher is bit-identical.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict
from threadpoolctl import threadpool_limits

from .. import handoff, signals
from ..config.checks import to_core, validate
from ..job import Job, Store, config_hashes, objective, open_job, run_tags
from ..launchers import cpu_cores, workers_for
from ..reporting.drawer import fitting
from .launcher_checks import check_knobs

if TYPE_CHECKING:
    from mlp_core import Dataset, FitResult, ModelConfig, TrainConfig
    from mlp_core.train import Event

    from ..tracking.run import MetricSink

ENGINE = "population"

log = logging.getLogger(__name__)


def group_key(cfg: DictConfig) -> tuple | None:
    """What jobs must share to train in one population; None for a job that can only run solo."""
    # NumPy and mlp_core (about 1 s) are imported where they are first needed, not when Hydra loads the plugin
    from mlp_core import fusable_key

    try:
        validate(cfg)
        model, train = to_core(cfg)
    except Exception:  # the solo run reports it as the basic launcher would
        return None
    data = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True, default=str)
    return (data, fusable_key(model, train), cfg.trainer.blas_threads)


def shuffle_key(cfg: DictConfig) -> tuple:
    """Jobs with equal shuffle keys draw the same batches (the same seed, or no shuffling): a population of them
    gathers one batch per step for all (``mlp_core.fit_population``)."""
    shuffle = bool(cfg.trainer.get("shuffle", True))
    return (shuffle, int(cfg.trainer.seed) if shuffle else 0)


def plan(keys: Sequence[tuple | None], max_members: int, n_workers: int = 1,
         orders: Sequence[Any] | None = None) -> list[list[int]]:
    """Positions of the jobs, grouped: equal keys together in launch order, a None key alone. A group larger than
    max_members, or (when there are fewer groups than n_workers) than its share of the workers, is split into equal
    chunks, in launch order, or with ``orders`` (each job's ``shuffle_key``) in launch order within equal orders, so
    that jobs drawing the same batches share a chunk. Groups come in the order of their first job."""
    by_key: dict[tuple, list[int]] = {}
    groups: list[list[int]] = []
    for position, key in enumerate(keys):
        if key is None:
            groups.append([position])
            continue
        if key not in by_key:
            by_key[key] = []
            groups.append(by_key[key])
        by_key[key].append(position)
    planned = []
    # split for the workers only when the groups alone cannot keep every worker busy: splitting then only loses fusion
    for_workers = n_workers if len(groups) < n_workers else 1
    for group in groups:
        if orders is not None and len(group) > 1:
            first_seen = {}
            for position in group:
                first_seen.setdefault(orders[position], len(first_seen))
            group = sorted(group, key=lambda position: first_seen[orders[position]])  # stable: launch order within
        size = min(max_members, -(-len(group) // for_workers))
        chunks = -(-len(group) // size)
        bounds = [round(i * len(group) / chunks) for i in range(chunks + 1)]
        planned += [group[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
    return planned


def launch(config: DictConfig, hydra_context: HydraContext, task_function: TaskFunction,
           job_overrides: Sequence[Sequence[str]], initial_job_idx: int, max_members: int,
           n_workers: int | None) -> list[JobReturn]:
    """Compose, group and run every job; returns Hydra JobReturns in the order of ``job_overrides``."""
    check_knobs(max_members, n_workers)
    n_workers = workers_for(n_workers, cpu_cores())
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    jobs = []
    for offset, overrides in enumerate(job_overrides):
        idx = initial_job_idx + offset
        cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = f"{cfg.hydra.job.name}_{idx}"
            cfg.hydra.job.num = idx
        jobs.append(cfg)
    keys = [group_key(cfg) for cfg in jobs]
    orders = [None if key is None else shuffle_key(cfg) for key, cfg in zip(keys, jobs)]
    groups = plan(keys, int(max_members), n_workers, orders)
    for group in groups:
        shown = "; ".join(" ".join(filter_overrides(list(job_overrides[p]))) or "(defaults)" for p in group)
        log.info("%s of %d job(s): %s", "population" if len(group) > 1 else "solo", len(group), shown)
    work = [[jobs[p] for p in group] for group in groups]
    processes = min(n_workers, len(work))  # never more workers than populations to train
    for cfg in jobs:  # a job's BLAS threads are the cores over the workers that start (launchers.parallel_workers)
        with open_dict(cfg):
            cfg.hydra.launcher.n_workers = processes
    if processes == 1:
        returns = [run_group(cfgs, hydra_context, task_function) for cfgs in work]
    else:
        from joblib import Parallel, delayed

        state = Singleton.get_state()
        returns = Parallel(n_jobs=processes, backend="loky")(
            delayed(run_group)(cfgs, hydra_context, task_function, state) for cfgs in work
        )
    ordered: list = [None] * len(jobs)
    for group, rets in zip(groups, returns):
        for position, ret in zip(group, rets):
            ordered[position] = ret
    return ordered


def run_group(cfgs: list[DictConfig], hydra_context: HydraContext, task_function: TaskFunction,
              singleton_state: dict[Any, Any] | None = None) -> list[JobReturn]:
    """Run one group (in a worker process when ``singleton_state`` is given): solo, or as a population."""
    if singleton_state is not None:
        setup_globals()
        Singleton.set_state(singleton_state)
    if len(cfgs) == 1:
        HydraConfig.instance().set_config(cfgs[0])
        return [run_job(hydra_context=hydra_context, task_function=task_function, config=cfgs[0],
                        job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")]
    return train_population(cfgs, hydra_context)


class _Member:
    """One member after its set-up: its job, store and sink, its core configs and its Hydra JobReturn."""

    def __init__(self, job: Job, store: Store | None, model: ModelConfig, train: TrainConfig, ret: JobReturn,
                 started: float):
        self.job, self.store, self.model, self.train, self.ret = job, store, model, train, ret
        self.started = started  # time.monotonic() at its set-up: its seconds in the sweep's progress
        self.sink: MetricSink | None = None
        self.done = False


def train_population(cfgs: list[DictConfig], hydra_context: HydraContext) -> list[JobReturn]:
    """Set up every member as a solo job would, train the ones left in one fused pass, finish each member's run."""
    # as the task function does: a worker that has ended its members' runs puts its handlers back, which tells a
    # launcher waiting on an interrupt that it may go on (signals.restore); kept, they made it wait out its grace
    replaced = signals.install()
    try:
        return _train_population(cfgs, hydra_context)
    finally:
        signals.restore(replaced)


def _train_population(cfgs: list[DictConfig], hydra_context: HydraContext) -> list[JobReturn]:
    from .. import lifecycle

    returns, members, loaded = [], [], {}
    for cfg in cfgs:
        found: dict = {}

        def set_up(task_cfg: DictConfig) -> float | None:
            started = time.monotonic()
            try:
                job, store, reused = open_job(task_cfg, ENGINE)
                if reused is not None:
                    _record(job, "reused", started)
                else:
                    if "dataset" not in loaded:
                        loaded["dataset"] = lifecycle.load_data(task_cfg)
                    found.update(job=job, store=store, core=to_core(task_cfg), started=started)
            except Exception:  # counted failed in the sweep's progress, as a solo job's failure is
                hydra_cfg = HydraConfig.get()
                handoff.record(hydra_cfg.sweep.dir, hydra_cfg.job.num, "failed", time.monotonic() - started)
                raise
            return reused

        HydraConfig.instance().set_config(cfg)
        ret = run_job(hydra_context=hydra_context, task_function=set_up, config=cfg,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        returns.append(ret)
        if ret.status == JobStatus.COMPLETED and found:
            members.append(_Member(found["job"], found["store"], *found["core"], ret, found["started"]))
    if not members:
        return returns
    dataset = loaded["dataset"]
    engine = f"{ENGINE}({len(members)})"
    for member in members:
        member.job.engine = engine
        if member.store is not None:
            member.job.tags = run_tags(member.job, member.store.parent)
    # Claims in one canonical order (config hash), never the launch order: see claims.py, "Groups"
    for member in sorted(members, key=lambda m: config_hashes(m.job)[0] if m.store is not None else ""):
        try:
            member.sink, reused = lifecycle.start_run(member.job, member.store, dataset, member.model, member.train)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # an interrupt while waiting for a claim: end every claimed member
                for claimed in members:
                    if claimed.sink is not None and not claimed.done:
                        _failed(claimed, exc)
                raise
            _failed(member, exc)
            members.remove(member)
            continue
        if member.sink is None:  # its config FINISHED elsewhere while this member waited for its claim
            member.done, member.ret.return_value = True, reused
            _record(member.job, "reused", member.started)
            members.remove(member)
    if members:
        _train(members, dataset)
    return returns


def _train(members: list[_Member], dataset: Dataset) -> None:
    import mlp_core

    from .. import lifecycle

    def finish(member: _Member, result: FitResult) -> None:
        try:
            lifecycle.record_result(member.job, result, member.sink)
            if member.sink.tracker is not None:
                member.sink.end("FINISHED")
        except Exception as exc:
            _failed(member, exc)
            return
        member.done = True
        member.ret.return_value = objective(result)
        _record(member.job, "done", member.started)
        log.info("%s: stop_reason=%s best val loss %.4f after %d steps (%s)", member.job.name, result.stop_reason,
                 result.best_val_loss, result.num_steps, member.job.engine)

    try:
        with signals.Dropped() as dropped, threadpool_limits(limits=members[0].job.threads, user_api="blas"), \
                fitting(lifecycle.drawing_sweep(members[0].job)):

            def on_event(k: int, event: Event) -> None:
                dropped.check()
                member = members[k]
                if member.sink is not None and not member.done:
                    member.sink(event)
                    if isinstance(event, mlp_core.RunEnd):
                        finish(member, event.result)

            mlp_core.fit_population(dataset, [mlp_core.Member(m.model, m.train) for m in members], on_event=on_event)
            dropped.check()
    except BaseException as exc:
        for member in members:
            if not member.done:
                _failed(member, exc)
        if not isinstance(exc, Exception):
            raise


def _failed(member: _Member, exc: BaseException) -> None:
    """End the member's run FAILED (KILLED on an interrupt) with what it logged; its JobReturn fails with exc."""
    from .. import lifecycle

    member.done = True
    if member.sink is not None and member.sink.tracker is not None:
        lifecycle.end_failed(member.sink, exc)
    member.ret.status = JobStatus.FAILED
    member.ret.return_value = exc
    if isinstance(exc, Exception):  # an interrupted job records nothing, as handoff.job_outcome
        _record(member.job, "failed", member.started)


def _record(job: Job, outcome: str, started: float) -> None:
    """The member's outcome in the sweep's progress (``handoff.record``), as ``handoff.job_outcome`` records a solo
    job's: a member's life is split between its set-up and the population's end, so no one block can wrap it."""
    if job.in_sweep:
        handoff.record(job.hydra_cfg.sweep.dir, job.hydra_cfg.job.num, outcome, time.monotonic() - started,
                       run_id=job.reused_run_id if outcome == "reused" else None)
