"""What MLflow tracking costs a training run: the same task2c run with and without tracking, in one process.

    .venv/bin/python benchmarks/bench_tracking.py [--epochs 50] [--repeats 1] [--data mnist_assignment]

Each repeat runs the job twice through the app's own task function (sweeper.app.train_and_track), once with
tracking.enabled=false and once against a temporary sqlite store, alternating the order between repeats so a drifting
machine load does not favour one side. The store is created (migrated) before timing starts: that one-off cost is
printed separately. Both sides write the same local artifacts (config, history, model, curves); the tracked side also
logs params, batched metrics, the dataset input and uploads the artifacts. Target: tracking adds at most 5 % of the
wall time.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from sweeper.app import CONF_DIR, train_and_track  # noqa: E402
from sweeper.tracking import open_store  # noqa: E402


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

    with tempfile.TemporaryDirectory() as tmp:
        import os

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
    print(f"task2c, {args.epochs} epochs on {args.data}: untracked {off:.2f} s, tracked {on:.2f} s, "
          f"overhead {100 * (on - off) / off:+.1f} % (target <= 5 %)")


if __name__ == "__main__":
    main()
