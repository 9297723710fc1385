"""What median pruning saves: the same 24-trial random search with and without pruning, in one run.

    .venv/bin/python benchmarks/bench_search.py [--epochs 3] [--trials 24] [--seed 0] [--rounds 2]

Both sides run the real CLI (`python -m sweeper -m +sweep=task3c_search ...`: the task3c recipe on the course's MNIST
split, lr log-uniform in [0.003, 0.3], momentum in [0, 0.95], width 32/64/128) with short epochs, the same sampler
seed (so both sample the same 24 configurations), tracking into one temporary sqlite store created before timing
starts, each side in its own experiment (so that neither reuses the other's runs). One side sets
hydra.sweeper.pruner=none, the other keeps the preset's median pruner (5 start-up trials, no pruning before step 625).

The two sides alternate, --rounds times (each round in experiments and an outputs dir of its own, so no round reuses
another's runs or continues another's study), and each side's wall time is its best round: one round's wall time moves
by several seconds on a shared machine, more than the difference being measured. Printed per side: the best objective
(best validation loss over the trials), the total training steps of all trials (the same in every round: the search is
reproducible), and the best and every round's wall time; then the steps pruning saved and how far its best objective is
from the unpruned one.
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
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_sweep import create_store  # noqa: E402  (migrates the store and creates the experiments before timing)


def run_side(name: str, pruner: str, args: argparse.Namespace, uri: str, outputs: Path) -> dict:
    """One search into experiment bench-<name>: its trials, pruned trials, steps, best objective and wall time."""
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
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; each side keeps its best wall time")
    args = parser.parse_args()
    sides = (("unpruned", "none"), ("median", "median"))
    rounds: dict[str, list[dict]] = {name: [] for name, _ in sides}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        create_store(uri, [f"bench-{name}-{r}" for r in range(args.rounds) for name, _ in sides])
        for r in range(args.rounds):
            for name, pruner in sides:
                # its own outputs dir too: a round in the same one would continue the earlier round's study
                rounds[name].append(run_side(f"{name}-{r}", pruner, args, uri, Path(tmp) / f"outputs-{r}"))
    results = {}
    for name, done in rounds.items():
        if len({(d["trials"], d["pruned"], d["steps"], d["best"]) for d in done}) > 1:
            sys.exit(f"{name}: the rounds differ in their trials ({done}): the search is not reproducible")
        results[name] = {**done[0], "wall": min(d["wall"] for d in done), "walls": [d["wall"] for d in done]}
    print(f"random search, task3c recipe on MNIST, {args.trials} trials x {args.epochs} epochs, seed {args.seed}, "
          f"best of {args.rounds} alternating rounds (load {os.getloadavg()[0]:.1f})")
    print(f"{'side':<10} {'trials':>6} {'pruned':>6} {'steps':>9} {'best val loss':>13} {'wall s':>8}  rounds")
    for name, r in results.items():
        print(f"{name:<10} {r['trials']:>6} {r['pruned']:>6} {r['steps']:>9,} {r['best']:>13.4f} {r['wall']:>8.1f}  "
              + " ".join(f"{w:.1f}" for w in r["walls"]))
    base, pruned = results["unpruned"], results["median"]
    saved = 1 - pruned["steps"] / base["steps"]
    gap = pruned["best"] / base["best"] - 1
    wall_saved = 1 - pruned["wall"] / base["wall"]
    print(f"pruning saves {saved:.1%} of the training steps (target >= 40 %) and {wall_saved:.1%} of the wall time;"
          f" its best objective is {gap:+.2%} from the unpruned one (target within 2 %)")


if __name__ == "__main__":
    main()
