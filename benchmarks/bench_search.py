"""What median pruning saves: the same 24-trial random search with and without pruning, in one run.

    .venv/bin/python benchmarks/bench_search.py [--epochs 3] [--trials 24] [--seed 0]

Both sides run the real CLI (`python -m sweeper -m +sweep=task3c_search ...`: the task3c recipe on the course's MNIST
split, lr log-uniform in [0.003, 0.3], momentum in [0, 0.95], width 32/64/128) with short epochs, the same sampler
seed (so both sample the same 24 configurations), tracking into one temporary sqlite store created before timing
starts, each side in its own experiment (so that neither reuses the other's runs). One side sets
hydra.sweeper.pruner=none, the other keeps the preset's median pruner (5 start-up trials, no pruning before step 625).

Printed per side: the best objective (best validation loss over the trials), the total training steps of all trials,
and the wall time; then the steps pruning saved and how far its best objective is from the unpruned one.
Target: pruning saves >= 40 % of the training steps while its best objective stays within 2 % of the unpruned one.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def run_side(name: str, pruner: str, args: argparse.Namespace, uri: str, outputs: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env["MLP_SWEEPS_OUTPUTS"] = str(outputs)
    command = [sys.executable, "-m", "sweeper", "-m", "+sweep=task3c_search", f"hydra.sweeper.pruner={pruner}",
               f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.seed={args.seed}",
               f"trainer.epochs={args.epochs}", f"tracking.uri={uri}", f"tracking.experiment_name=bench-{name}"]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{name}: the search failed:\n{proc.stderr[-3000:]}")
    from mlflow.tracking import MlflowClient

    from sweeper import names

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"bench-{name}")
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
            if names.TRIAL_NUMBER in r.data.tags]
    return {
        "trials": len(runs),
        "pruned": sum(r.data.tags.get(names.STOP_REASON) == names.STOP_PRUNED for r in runs),
        "steps": int(sum(r.data.metrics[names.STEPS] for r in runs)),
        "best": min(r.data.metrics[names.BEST_VAL_LOSS] for r in runs),
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        from omegaconf import OmegaConf

        from sweeper.tracking.store import open_store

        for name in ("unpruned", "median"):  # migrate the store and create the experiments before timing
            open_store(OmegaConf.create({"uri": uri, "experiment_name": f"bench-{name}", "artifact_location": None}))
        results = {name: run_side(name, pruner, args, uri, Path(tmp) / "outputs")
                   for name, pruner in (("unpruned", "none"), ("median", "median"))}
    print(f"random search, task3c recipe on MNIST, {args.trials} trials x {args.epochs} epochs, seed {args.seed} "
          f"(load {os.getloadavg()[0]:.1f})")
    print(f"{'side':<10} {'trials':>6} {'pruned':>6} {'steps':>9} {'best val loss':>13} {'wall s':>8}")
    for name, r in results.items():
        print(f"{name:<10} {r['trials']:>6} {r['pruned']:>6} {r['steps']:>9,} {r['best']:>13.4f} {r['wall']:>8.1f}")
    base, pruned = results["unpruned"], results["median"]
    saved = 1 - pruned["steps"] / base["steps"]
    gap = pruned["best"] / base["best"] - 1
    wall_saved = 1 - pruned["wall"] / base["wall"]
    print(f"pruning saves {saved:.1%} of the training steps (target >= 40 %) and {wall_saved:.1%} of the wall time;"
          f" its best objective is {gap:+.2%} from the unpruned one (target within 2 %)")


if __name__ == "__main__":
    main()
