"""Population training against serial and joblib sweeps: one 16-job sweep three ways, in one run.

    .venv/bin/python benchmarks/bench_population.py [--epochs 5] [--workers 2]

The sweep is the task3c recipe on the course's MNIST split over 4 learning rates x 2 momenta x 2 seeds, early
stopping off and a fixed number of epochs, so the 16 jobs do equal work. It runs through the real CLI three times,
each tracked into one sqlite store created (migrated) before timing starts, each in its own experiment: the basic
launcher (serial, jobs with all cores as BLAS threads), joblib with --workers workers, and hydra/launcher=population
with n_workers=--workers (one BLAS thread each; the 16 jobs become --workers populations). Wall times cover everything
a user waits for (Hydra, MLflow, data, training, artifacts, the summary). Prints wall time, model-steps/s (training
steps of all jobs / wall time) and the ratios, with the machine's state: the load average before and after, and a
2048^3 float32 matmul (the BLAS ceiling) measured in the same run.

Targets on the 2-core machine: population >= 2.5x the serial sweep and >= 1.4x the joblib sweep. Then it prints how
much of each wall time was training (the runs' train_seconds), the ratios if nothing but training cost time, and the
sweep's FLOPs at the ceiling: what bounds the ratios (docs/population.md).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_core import matmul_ceiling, step_flops  # noqa: E402
from bench_sweep import cores, create_store, run_sweep  # noqa: E402

GRID = ["optimizer.lr=0.005,0.01,0.02,0.05", "optimizer.momentum=0.0,0.9"]  # x trainer.seed=0,1 (args.seeds)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def run(label: str, launcher: list[str], args: argparse.Namespace, tmp: Path, store: str) -> dict:
    """One timed sweep through the CLI (bench_sweep.run_sweep: the seeds come from args.seeds, the rest of the grid
    with the launcher's overrides)."""
    result = run_sweep(label, [*GRID, *launcher], args, tmp, store)
    wall = result["wall"]
    print(f"  {label:10s} wall {wall:7.1f} s  {result['steps'] / wall:8.0f} model-steps/s  {result['jobs']} jobs, "
          f"BLAS threads {','.join(result['blas_threads'])}  (load {loadavg()})", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", default="mnist_assignment")
    parser.add_argument("--sides", default="serial,joblib,population", help="which sweeps to run, in this order")
    args = parser.parse_args()
    args.seeds = "0,1"

    launchers = {
        "serial": [],
        "joblib": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.workers}"],
        "population": ["hydra/launcher=population", f"hydra.launcher.n_workers={args.workers}"],
    }
    sides = {label: launchers[label] for label in args.sides.split(",")}
    print(f"{cores()} cores, load {loadavg()}; 16 jobs of task3c on {args.data}, {args.epochs} epochs each")
    ceiling = matmul_ceiling(3)
    print(f"ceiling: 2048^3 float32 matmul = {ceiling / 1e9:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = f"sqlite:///{tmp / 'mlflow.db'}"
        create_store(store, list(sides))
        results = {label: run(label, launcher, args, tmp, store) for label, launcher in sides.items()}
    print(f"ceiling after the sweeps: {matmul_ceiling(3) / 1e9:.1f} GFLOP/s, load {loadavg()}")
    if "population" in results:
        population = results["population"]["wall"]
        for label, target in (("serial", 2.5), ("joblib", 1.4)):
            if label in results:
                print(f"population vs {label}: {results[label]['wall'] / population:.2f}x (target >= {target}x)")
        training = {label: training_wall(label, result, args.workers) for label, result in results.items()}
        print("training alone (fit, from the runs' train_seconds; the rest of each wall time is Hydra, the store, "
              "artifacts and the summary):")
        for label, seconds in training.items():
            print(f"  {label:10s} {seconds:7.1f} s  ({100 * seconds / results[label]['wall']:.0f} % of its wall time)")
        for label in ("serial", "joblib"):
            if label in training:
                print(f"population vs {label} if nothing but training cost time: "
                      f"{training[label] / training['population']:.2f}x")
    flops = sweep_flops(args)
    print(f"the sweep's FLOPs at the ceiling: {flops / 1e12:.2f} TFLOP / {ceiling / 1e9:.0f} GFLOP/s = "
          f"{flops / ceiling:.1f} s (training steps {100 * train_share():.0f} %, the full-set evaluations the rest)")


def training_wall(label: str, result: dict, workers: int) -> float:
    """Wall seconds the sweep spent in fit: the sum of its runs' train_seconds when they ran one after another, that
    sum / workers for joblib, and for the population its first member's: a member's train_seconds is its
    population's time until it stopped, the members of this sweep all stop at the same step (equal jobs), and each
    later member's time also holds the recording of the members finished before it (metrics, artifacts); the
    populations run side by side."""
    seconds = result["train_seconds"]
    if label == "population":
        return min(seconds)
    return sum(seconds) / (workers if label == "joblib" else 1)


def _epoch_flops() -> tuple[float, float]:
    """(training FLOPs, evaluation FLOPs) of one task3c job epoch on the assignment split: 625 steps of batch 32 with
    784-64-10, counted as bench_core counts a step, and 5 validation points each evaluating 20,000 training and
    10,000 validation samples (one forward pass each)."""
    sizes = [784, 64, 10]
    forward_per_sample = 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return 625 * step_flops(sizes, 32), 5 * 30_000 * forward_per_sample


def sweep_flops(args: argparse.Namespace) -> float:
    return 16 * args.epochs * sum(_epoch_flops())


def train_share() -> float:
    train, evaluation = _epoch_flops()
    return train / (train + evaluation)


if __name__ == "__main__":
    main()
