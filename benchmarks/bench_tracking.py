"""What MLflow tracking costs a training run: the same task2c run with and without tracking, in one process.

    .venv/bin/python benchmarks/bench_tracking.py [--epochs 50] [--repeats 3] [--data mnist_assignment]
        [--metrics process|inline|mlflow-async]

Each repeat runs the job twice through the app's own task function (sweeper.lifecycle.train_and_track), once with
tracking.enabled=false and once against a temporary sqlite store, alternating the order between repeats so a drifting
machine load does not favour one side. The store is created (migrated) before timing starts: that one-off cost is
printed separately. Both sides write the same local artifacts (config, history, model, curves); the tracked side also
logs params, batched metrics, the dataset input and uploads the artifacts. Target: tracking adds at most 5 % of the
wall time. On a shared machine the A/B difference is noisy: the overhead is reported per repeat (each tracked run
against the untracked run next to it) as median and range. Tracking's own time (opening the store, creating the run,
every tracker call including the final drain of a metric writer) is also timed directly: that figure depends far less
on what the rest of the machine is doing, and is the one to compare with the target. Not in it: buffering the points
during training (MetricSink, about 0.15 µs a point, ~5 ms for task2c).

``--metrics`` picks how metrics are written: ``inline`` (the default, as in the app) writes in the trainer's thread,
through the sqlite bulk path (sweeper.tracking.mlflow_private) on a sqlite store and ``log_batch`` elsewhere; ``process`` is
tracking.background_metrics=true (sweeper.tracking.background.MetricWriter, a writer process calling ``log_batch``);
``mlflow-async`` is MLflow's own async logging (``log_batch(..., synchronous=False)``, a thread in the trainer's
process, flushed before the run ends).
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from sweeper import job, lifecycle  # noqa: E402
from sweeper.app import register  # noqa: E402
from sweeper.lifecycle import train_and_track  # noqa: E402
from sweeper.paths import CONF_DIR  # noqa: E402
from sweeper.tracking.run import RunTracker  # noqa: E402
from sweeper.tracking.store import open_store  # noqa: E402

MLFLOW_SECONDS = {"calls": 0, "seconds": 0.0}
SECONDS_BY_METHOD: dict[str, float] = {}


def _timed(owner: object, name: str) -> None:
    function = getattr(owner, name)
    is_class_method = isinstance(owner, type) and isinstance(owner.__dict__.get(name), classmethod)

    @functools.wraps(function)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            MLFLOW_SECONDS["calls"] += 1
            MLFLOW_SECONDS["seconds"] += elapsed
            SECONDS_BY_METHOD[name] = SECONDS_BY_METHOD.get(name, 0.0) + elapsed

    setattr(owner, name, classmethod(lambda cls, *a, **k: timed(*a, **k)) if is_class_method else timed)


def time_mlflow_calls() -> None:
    """Accumulate the wall time of everything only a tracked job does: a direct measure, less noisy than A - B.

    That is RunTracker's MLflow calls, plus the app's tracked-only steps around them: opening the store, the orphan
    check, the run's tags (git commit), its owner tags and creating the run.
    """
    for name in ("log_params", "set_tags", "log_metrics", "log_dataset", "log_artifact", "end"):
        _timed(RunTracker, name)
    _timed(RunTracker, "start")
    for name in ("open_store", "run_tags", "mark_orphaned_runs"):  # patched where the job's steps look them up
        _timed(job, name)
    _timed(lifecycle, "owner_tags")


def choose_metric_path(mode: str) -> None:
    """Make the app's tracker write metrics the ``mode`` way (see the module docstring)."""
    start = RunTracker.start.__func__

    def start_with(cls, *args, background_metrics=False, **kwargs):
        return start(cls, *args, background_metrics=(mode == "process"), **kwargs)

    RunTracker.start = classmethod(start_with)
    if mode == "mlflow-async":
        import mlflow
        from mlflow.entities import Metric

        log_metrics, end = RunTracker.log_metrics, RunTracker.end

        def log_metrics_async(self, items):
            if len(items) < 50:  # the summary: keep it synchronous like the rest of the run's end
                return log_metrics(self, items)
            now = self._now_ms()
            metrics = [Metric(i[0], float(i[1]), i[3] if len(i) > 3 else now, int(i[2])) for i in items]
            for start_at in range(0, len(metrics), 1000):
                self.client.log_batch(self.run_id, metrics=metrics[start_at:start_at + 1000], synchronous=False)

        def end_after_flush(self, status="FINISHED"):
            mlflow.flush_async_logging()
            return end(self, status)

        RunTracker.log_metrics, RunTracker.end = log_metrics_async, end_after_flush


def job_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def main() -> None:
    register()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default="mnist_assignment")
    parser.add_argument("--metrics", choices=("process", "inline", "mlflow-async"), default="inline")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for both sides, e.g. trainer.blas_threads=1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    choose_metric_path(args.metrics)
    time_mlflow_calls()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLP_SWEEPS_OUTPUTS"] = tmp  # the untracked side's artifacts land here too, not in outputs/
        base = ["experiment=task2c", f"data={args.data}", f"trainer.epochs={args.epochs}", *args.overrides]
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        tracked = job_config(base + [f"tracking.uri={store}"])
        if "skip_finished" in tracked.tracking:  # every repeat must train, not reuse the first repeat's run
            tracked.tracking.skip_finished = False
        untracked = job_config(base + ["tracking.enabled=false"])
        started = time.perf_counter()
        open_store(tracked.tracking)
        print(f"store creation (one-off, before timing): {time.perf_counter() - started:.2f} s")

        times: dict[str, list[float]] = {"untracked": [], "tracked": []}
        for repeat in range(args.repeats):
            order = [("untracked", untracked), ("tracked", tracked)]
            for label, cfg in order if repeat % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                train_and_track(cfg)
                times[label].append(time.perf_counter() - started)
                print(f"repeat {repeat}: {label:9s} {times[label][-1]:8.2f} s", flush=True)
    off, on = statistics.median(times["untracked"]), statistics.median(times["tracked"])
    overheads = sorted(100 * (t - u) / u for u, t in zip(times["untracked"], times["tracked"]))
    inside = MLFLOW_SECONDS["seconds"] / args.repeats
    print(f"task2c, {args.epochs} epochs on {args.data}, metrics={args.metrics}, {args.repeats} repeats: "
          f"untracked median {off:.2f} s ({min(times['untracked']):.2f}-{max(times['untracked']):.2f}), "
          f"tracked median {on:.2f} s ({min(times['tracked']):.2f}-{max(times['tracked']):.2f})")
    print(f"overhead per repeat: median {statistics.median(overheads):+.1f} %, range {overheads[0]:+.1f} .. "
          f"{overheads[-1]:+.1f} % (target <= 5 %); min vs min {100 * (min(times['tracked']) - min(times['untracked'])) / min(times['untracked']):+.1f} %")
    print(f"tracking's own time per tracked run (store, run, tracker calls, incl. a writer's final drain): {inside:.2f} s in "
          f"{MLFLOW_SECONDS['calls'] // args.repeats} calls = {100 * inside / off:.1f} % of the untracked run")
    print("  by method: " + ", ".join(f"{name} {seconds / args.repeats:.3f} s"
                                      for name, seconds in sorted(SECONDS_BY_METHOD.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
