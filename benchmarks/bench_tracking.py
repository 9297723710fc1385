"""What MLflow tracking costs a training run: the same task2c run with and without tracking, in one process.

    .venv/bin/python benchmarks/bench_tracking.py [--epochs 50] [--repeats 1] [--data mnist_assignment]

Each repeat runs the job twice through the app's own task function (sweeper.app.train_and_track), once with
tracking.enabled=false and once against a temporary sqlite store, alternating the order between repeats so a drifting
machine load does not favour one side. The store is created (migrated) before timing starts: that one-off cost is
printed separately. Both sides write the same local artifacts (config, history, model, curves); the tracked side also
logs params, batched metrics, the dataset input and uploads the artifacts. Target: tracking adds at most 5 % of the
wall time. On a shared machine the A/B difference is noisy, so the time spent inside the MLflow calls is also measured
directly and printed.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from sweeper.app import CONF_DIR, train_and_track  # noqa: E402
from sweeper.tracking import RunTracker, open_store  # noqa: E402

MLFLOW_SECONDS = {"calls": 0, "seconds": 0.0}


def time_mlflow_calls() -> None:
    """Accumulate the wall time spent inside RunTracker's MLflow calls: a direct measure, less noisy than A - B."""
    for name in ("log_params", "set_tags", "log_metrics", "log_dataset", "log_artifact", "end"):
        method = getattr(RunTracker, name)

        @functools.wraps(method)
        def timed(self, *args, method=method, **kwargs):
            started = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                MLFLOW_SECONDS["calls"] += 1
                MLFLOW_SECONDS["seconds"] += time.perf_counter() - started

        setattr(RunTracker, name, timed)


def job_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--data", default="mnist_assignment")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    time_mlflow_calls()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLP_SWEEPS_OUTPUTS"] = tmp  # the untracked side's artifacts land here too, not in outputs/
        base = ["experiment=task2c", f"data={args.data}", f"trainer.epochs={args.epochs}"]
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        tracked = job_config(base + [f"tracking.uri={store}"])
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
                print(f"repeat {repeat}: {label:9s} {times[label][-1]:8.2f} s")
    off, on = min(times["untracked"]), min(times["tracked"])
    inside = MLFLOW_SECONDS["seconds"] / args.repeats
    print(f"task2c, {args.epochs} epochs on {args.data}: untracked {off:.2f} s, tracked {on:.2f} s, "
          f"overhead {100 * (on - off) / off:+.1f} % (target <= 5 %)")
    print(f"inside MLflow calls per tracked run: {inside:.2f} s in {MLFLOW_SECONDS['calls'] // args.repeats} calls "
          f"= {100 * inside / off:.1f} % of the untracked run")


if __name__ == "__main__":
    main()
