"""Sweep throughput: the same 4-job sweep serially (basic launcher) and on 2 joblib workers, in one run.

    .venv/bin/python benchmarks/bench_sweep.py [--epochs 20] [--seeds 0,1,2,3] [--workers 2] [--repeats 1]

The sweep is task3c on the course's MNIST split (20,000 training images, 625 steps per epoch) over 4 seeds with early
stopping off, so the 4 jobs do equal work (12,500 steps at 20 epochs) and 2 workers split them evenly. Both sides
run the real CLI (`python -m sweeper -m ...`) as a subprocess, with tracking into one temporary sqlite store that is
created (migrated) before timing starts; each side has its own experiment and parent run. The wall time covers
everything a user waits for: Hydra's startup, the parent run, the jobs (data loading, training, artifacts, MLflow) and
the sweep summary. Both sides leave trainer.blas_threads=null, as a user would: serial jobs get all cores of BLAS
threads, each of the 2 workers gets cores / 2. A third side, "serial-1t", is the serial sweep at
trainer.blas_threads=1; the speed-up is also given against the faster of the two serial sides (the honest ratio).
With --repeats > 1 the order rotates, so a drifting machine load does not favour one side; the ratios of every repeat
are printed.

Target on the 2-core machine: the parallel sweep finishes jobs at >= 1.7x the serial rate.

Besides wall times the script reads the children back from the store and prints, per side, the mean train seconds
per job (the time inside mlp_core.fit) and the rest of the wall time ("overhead": process and worker startup,
data loading, MLflow, artifacts, the summary), which is where a shortfall comes from. Before the sweeps, a probe runs
bare mlp_core.fit processes: 1 BLAS thread alone and 2 at once (their throughput ratio is the ceiling any launcher can
reach with the cores that are free at that moment), and one alone with all cores as BLAS threads, as the serial sweep
runs. From these it prints the most a 2-worker sweep can gain over the serial one with zero overhead.

Why ">= 1.7x" is out of reach for course jobs on 2 cores (measured 2026-11-24, quiet machine): at every validation
point the course evaluates the full validation set and the full training set (SPEC: 30,000 forward passes every 125
steps). That is 68 % of a task3c job's time at 1 BLAS thread (0.90 of 1.32 s for 4 epochs), and those large matmuls
run 1.75x faster on 2 threads, while the batch-32 steps do not speed up (0.41 vs 0.44 s). So the serial sweep already
keeps both cores busy most of the time: a job takes 0.94 s at 2 threads against 1.32 s at 1, and 2 workers at 1
thread can be at most 2 x 0.94 / 1.32 = 1.42x faster than serial before any overhead. The probe measures this bound
on every run.

Measured on the quiet 2-core machine (2026-11-24, 20 epochs, 4 equal jobs): see the README's benchmark table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def create_store(uri: str, experiment_names: list[str]) -> None:
    """Migrate the sqlite store (about 7 s here) and create the experiments, before any timed sweep."""
    from omegaconf import OmegaConf

    from sweeper.tracking.store import open_store

    for name in experiment_names:
        open_store(OmegaConf.create({"uri": uri, "experiment_name": name, "artifact_location": None,
                                     "enabled": True}))


PROBE = """
import sys, time
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from threadpoolctl import threadpool_limits
import mlp_core
from sweeper.app import register
from sweeper.paths import CONF_DIR
from sweeper.config.checks import to_core
register()
with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    cfg = compose("config", overrides=["experiment=task3c", "trainer.epochs=" + sys.argv[1], "data=" + sys.argv[2],
                                       "trainer.early_stopping.enabled=false"])
model_cfg, train_cfg = to_core(cfg)
d = OmegaConf.to_container(cfg.data, resolve=True, enum_to_str=True)
data = mlp_core.load_dataset(name=d["name"], split=d["split"], root=d["root"], normalization=d["normalization"],
                             allow_download=d["allow_download"])
with threadpool_limits(limits=int(sys.argv[3]), user_api="blas"):
    started = time.perf_counter()
    mlp_core.fit(data, model_cfg, train_cfg)
print(time.perf_counter() - started)
"""


def compute_scaling(args: argparse.Namespace) -> float:
    """Bare mlp_core.fit processes: what the cores can give any launcher right now, and against the serial sweep.

    No Hydra, MLflow or launcher. 1 BLAS thread alone, then `workers` such processes at once: their throughput ratio is
    the most any launcher can get from the cores that are free right now. Then one process alone with every core as BLAS
    threads, as the serial sweep runs its jobs: `workers` x (that time) / (the `workers`-at-once time) is the most a
    parallel sweep can gain over the serial one, with no overhead at all. Returns that bound.
    """
    def fit_seconds(n: int, threads: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, "-c", PROBE, str(args.probe_epochs), args.data, str(threads)],
                                  cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return [float(p.communicate()[0].split()[-1]) for p in procs]

    alone = fit_seconds(1, 1)[0]
    together = max(fit_seconds(args.workers, 1))
    threaded = fit_seconds(1, cores())[0]
    ratio = args.workers * alone / together
    bound = args.workers * threaded / together
    print(f"compute probe (bare fit, {args.probe_epochs} epochs): 1 BLAS thread alone {alone:.2f} s, {args.workers} at "
          f"once {together:.2f} s -> {ratio:.2f}x: the ceiling for any launcher right now; {cores()} BLAS threads "
          f"alone {threaded:.2f} s ({alone / threaded:.2f}x one thread) -> at most {bound:.2f}x over the serial sweep")
    return bound


def run_sweep(label: str, launcher: list[str], args: argparse.Namespace, tmp: Path, store: str) -> dict:
    """One timed sweep through the CLI; returns wall seconds and what its children recorded."""
    sweep_dir = tmp / label
    cmd = [sys.executable, "-m", "sweeper", "-m", "experiment=task3c", f"data={args.data}",
           f"trainer.epochs={args.epochs}", "trainer.early_stopping.enabled=false", f"trainer.seed={args.seeds}", *launcher,
           f"tracking.uri={store}",
           f"tracking.experiment_name={label}", f"hydra.sweep.dir={sweep_dir}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env["MLP_SWEEPS_OUTPUTS"] = str(tmp / "outputs")
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{label} sweep failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"label": label, "wall": wall, **children_of(store, sweep_dir)}


def children_of(store: str, sweep_dir: Path) -> dict:
    from mlflow.tracking import MlflowClient

    parent = json.loads((sweep_dir / "mlflow_parent.json").read_text())
    client = MlflowClient(store)
    runs = client.search_runs([parent["experiment_id"]],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent['run_id']}'")
    if not runs or any(r.info.status != "FINISHED" for r in runs):
        sys.exit(f"{sweep_dir.name}: expected FINISHED children, got {[r.info.status for r in runs]}")
    return {
        "jobs": len(runs),
        "train_seconds": [r.data.metrics["train_seconds"] for r in runs],
        "blas_threads": sorted({r.data.tags["blas_threads"] for r in runs}),
        "steps": int(sum(r.data.metrics["steps"] for r in runs)),
    }


def report(result: dict, workers: int) -> None:
    train = result["train_seconds"]
    busy = sum(train) / workers  # wall time the training alone would take, perfectly split over the workers
    print(f"  {result['label']:8s} wall {result['wall']:7.1f} s  {60 * result['jobs'] / result['wall']:5.2f} jobs/min  "
          f"{result['jobs']} jobs x {workers} at once, BLAS threads {','.join(result['blas_threads'])}, "
          f"train {statistics.mean(train):5.1f} s/job, overhead {result['wall'] - busy:5.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2,3", help="the swept trainer.seed values (one job each)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", default="mnist_assignment")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--probe-epochs", type=int, default=3, help="epochs of the compute-scaling probe (0: skip)")
    args = parser.parse_args()

    sides = {
        "serial": ([], 1),
        "serial-1t": (["trainer.blas_threads=1"], 1),
        "joblib": (["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.workers}"], args.workers),
    }
    print(f"{cores()} cores; task3c on {args.data}, {args.epochs} epochs, seeds {args.seeds}")
    bound = compute_scaling(args) if args.probe_epochs > 0 else None
    ratios = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = f"sqlite:///{tmp / 'mlflow.db'}"
        started = time.perf_counter()
        # one experiment per timed sweep: a relaunch skips configs that already FINISHED in its experiment
        create_store(store, [f"{label}-{repeat}" for repeat in range(args.repeats) for label in sides])
        print(f"store creation (one-off, before timing): {time.perf_counter() - started:.1f} s")
        for repeat in range(args.repeats):
            order = list(sides)[repeat % len(sides):] + list(sides)[:repeat % len(sides)]
            results = {}
            print(f"repeat {repeat} ({' then '.join(order)}):")
            for label in order:
                launcher, workers = sides[label]
                results[label] = run_sweep(f"{label}-{repeat}", launcher, args, tmp, store)
                results[label]["label"] = label
                report(results[label], workers)
            # same jobs on every side, so the ratio of wall times is the ratio of throughputs
            vs_default = results["serial"]["wall"] / results["joblib"]["wall"]
            vs_best = min(results["serial"]["wall"], results["serial-1t"]["wall"]) / results["joblib"]["wall"]
            ratios.append((vs_default, vs_best))
            print(f"  speed-up (joblib jobs/min / serial jobs/min): {vs_default:.2f}x vs serial, {vs_best:.2f}x vs the "
                  f"faster serial side (target >= 1.7x)"
                  + (f"; the compute bound vs serial measured above: {bound:.2f}x" if bound else ""))
    if len(ratios) > 1:
        for index, label in enumerate(("serial", "the faster serial side")):
            values = [r[index] for r in ratios]
            print(f"speed-up vs {label} over {len(values)} repeats: min {min(values):.2f}x, "
                  f"median {statistics.median(values):.2f}x, max {max(values):.2f}x")


if __name__ == "__main__":
    main()
