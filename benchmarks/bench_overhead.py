"""The tool's own cost per job: N tracked task3c jobs against the same N fits in a bare loop, in one run.

    .venv/bin/python benchmarks/bench_overhead.py [--jobs 1,16] [--launchers basic,population] [--rounds 3]

Each measure runs the same N task3c jobs (1 epoch, early stopping off, seeds 0..N-1, so no job reuses another's run)
two ways, interleaved, best of --rounds rounds:
  tracked   the real CLI (`python -m sweeper`) into a sqlite store created (migrated) before timing starts, a fresh
            experiment per round; N = 1 on the basic launcher is a single run (no -m), as a user types it; every other
            case is a multirun with the named launcher (population: its defaults, one worker per core).
  bare      one process: `import mlp_core`, the data loaded once, `mlp_core.fit` per config; no Hydra, no MLflow (the
            configs are composed in this script beforehand and handed over pickled).
Both are wall times of a fresh process, so the interpreter's start counts on both sides. Prints the ratio
tracked / bare and the overhead per job ((tracked - bare) / N).

A third side, interleaved too, is the floor: the bare loop in a process that first imports Hydra and MLflow and opens
the sqlite store (what any tracked run through MLflow pays before its first write, however little else it does).
floor / bare is the best ratio a tracked sweep could reach on this machine; tracked / floor is what the tool itself
adds on top.

Then it splits the tracked side: one more run of the largest N per launcher under cProfile, in one process (the
population launcher with n_workers=1), and the cumulative time of the functions that make each step: composition,
data, claim, run set-up, metric writes, artifacts, figure, report, and training (mlp_core.fit / fit_population). What
is left of the wall time is the fixed start-up (interpreter, imports, store, parent run). cProfile slows Python-heavy
code more than BLAS-bound code, so read the split for where the time goes, and the ratios above for how much.

Targets (quiet 2-core machine): 16 jobs <= 2.0x, 1 job <= 3.0x.
"""
from __future__ import annotations

import argparse
import os
import pickle
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_population import loadavg  # noqa: E402
from bench_sweep import create_store  # noqa: E402

RECIPE = ["experiment=task3c", "trainer.epochs=1", "trainer.early_stopping.enabled=false"]
LAUNCHERS = {"basic": [], "population": ["hydra/launcher=population"]}

BARE = """
import pickle, sys
import mlp_core
data_kwargs, configs = pickle.load(sys.stdin.buffer)
dataset = mlp_core.load_dataset(**data_kwargs)
for model_cfg, train_cfg in configs:
    mlp_core.fit(dataset, model_cfg, train_cfg)
"""
# the bare loop after what no tracked run can skip: Hydra's and MLflow's imports and the store's opening
FLOOR = """
import sys
import hydra
from mlflow.tracking import MlflowClient
MlflowClient(sys.argv[1]).search_experiments(max_results=1)
""" + BARE

# step -> the functions whose cumulative time makes it, as (file path suffix, function name); a step's time is the
# sum over its functions minus the steps nested inside them (NESTED).
STEPS: dict[str, list[tuple[str, str]]] = {
    "composition": [("hydra/_internal/config_loader_impl.py", "load_sweep_config"),
                    ("sweeper/config/checks.py", "validate")],
    "data": [("mlp_core/data.py", "load_dataset")],
    "claim": [("sweeper/tracking/claims.py", "acquire")],
    "run set-up": [("sweeper/job.py", "track_job"), ("sweeper/job.py", "open_job"), ("sweeper/app.py", "start_run"),
                   ("sweeper/lifecycle.py", "start_run"), ("sweeper/lifecycle.py", "open_job")],
    "metric writes": [("sweeper/tracking/run.py", "__call__"), ("sweeper/tracking/run.py", "flush"),
                      ("sweeper/tracking/run.py", "log_summary"), ("sweeper/tracking/run.py", "end")],
    "artifacts": [("sweeper/app.py", "write_artifacts"), ("sweeper/lifecycle.py", "write_artifacts")],
    "figure": [("sweeper/reporting/plots.py", "plot_curves")],
    "report": [("sweeper/sweep/callbacks.py", "on_multirun_end")],
    "training": [("mlp_core/train.py", "fit"), ("mlp_core/population.py", "fit_population")],
}
NESTED = {"run set-up": ["claim"], "artifacts": ["figure"]}


def compose_core(jobs: int) -> tuple[dict, list]:
    """The data's load arguments and each job's (ModelConfig, TrainConfig), composed as the app composes them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sweeper.app import register
    from sweeper.config.checks import to_core
    from sweeper.paths import CONF_DIR

    register()
    configs = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for seed in range(jobs):
            cfg = compose("config", overrides=[*RECIPE, f"trainer.seed={seed}"])
            configs.append(to_core(cfg))
    data = OmegaConf.to_container(cfg.data, resolve=True, enum_to_str=True)
    return {key: data[key] for key in ("name", "split", "root", "normalization", "allow_download")}, configs


def environment(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env["MLP_SWEEPS_OUTPUTS"] = str(tmp / "outputs")
    return env


def tracked_command(jobs: int, launcher: str, store: str, experiment: str, sweep_dir: Path) -> list[str]:
    seeds = ",".join(str(seed) for seed in range(jobs))
    args = [*RECIPE, f"trainer.seed={seeds}", f"tracking.uri={store}", f"tracking.experiment_name={experiment}"]
    if jobs == 1 and launcher == "basic":
        return ["-m", "sweeper", *args, f"hydra.run.dir={sweep_dir}"]
    return ["-m", "sweeper", "-m", *args, *LAUNCHERS[launcher], f"hydra.sweep.dir={sweep_dir}"]


def timed(argv: list[str], env: dict[str, str], cwd: Path, stdin: bytes | None = None) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, input=stdin, capture_output=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:6])} ... failed (exit {proc.returncode}):\n{proc.stderr.decode()[-3000:]}")
    return wall


def split(profile: Path, wall: float, jobs: int) -> dict[str, float]:
    """Seconds per job of each step, and the fixed start-up (what no step covers), from a cProfile dump."""
    stats = pstats.Stats(str(profile)).stats  # (file, line, function) -> (cc, nc, tt, cumulative, callers)
    found: dict[tuple[str, str, str], float] = {}  # the largest of same-named functions in one file (a method
    for (filename, _, function), (_, _, _, cumulative, _) in stats.items():  # and the one it wraps count once)
        path = filename.replace(os.sep, "/")
        for step, functions in STEPS.items():
            for suffix, name in functions:
                if path.endswith(suffix) and function == name:
                    key = (step, suffix, name)
                    found[key] = max(found.get(key, 0.0), cumulative)
    total = {step: sum(s for (of, _, _), s in found.items() if of == step) for step in STEPS}
    own = dict(total)
    for step, inner in NESTED.items():
        own[step] = max(0.0, total[step] - sum(total[name] for name in inner))
    per_job = {step: seconds / jobs for step, seconds in own.items() if step != "report"}
    per_job["report (per sweep)"] = own["report"]
    per_job["fixed start-up (per sweep)"] = max(0.0, wall - sum(own.values()))
    return per_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", default="1,16", help="the values of N, comma-separated")
    parser.add_argument("--launchers", default="basic,population")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-split", action="store_true", help="skip the profiled runs")
    args = parser.parse_args()
    sizes = [int(n) for n in args.jobs.split(",")]
    launchers = args.launchers.split(",")
    print(f"load average before: {loadavg()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = environment(tmp)
        store = f"sqlite:///{tmp / 'mlflow.db'}"
        cases = [(n, launcher) for n in sizes for launcher in launchers]
        experiments = [f"{launcher}-{n}-{r}" for n, launcher in cases for r in range(args.rounds)]
        create_store(store, experiments + [f"profile-{launcher}" for launcher in launchers])
        composed = {n: pickle.dumps(compose_core(n)) for n in sizes}
        data_kwargs = pickle.loads(composed[sizes[0]])[0]
        timed([sys.executable, "-c", BARE], env, tmp, pickle.dumps((data_kwargs, [])))  # the on-disk data cache, filled
        rows = []
        for n, launcher in cases:
            tracked, bare, floor = [], [], []
            for r in range(args.rounds):  # interleaved: a drifting load touches every side alike
                bare.append(timed([sys.executable, "-c", BARE], env, tmp, composed[n]))
                floor.append(timed([sys.executable, "-c", FLOOR, store], env, tmp, composed[n]))
                argv = [sys.executable, *tracked_command(n, launcher, store, f"{launcher}-{n}-{r}",
                                                         tmp / f"{launcher}-{n}-{r}")]
                tracked.append(timed(argv, env, tmp))
            rows.append((n, launcher, min(tracked), min(bare), min(floor)))
        print(f"\n{'jobs':>4}  {'launcher':<10} {'tracked s':>9} {'bare s':>7} {'ratio':>6} {'overhead/job s':>14} "
              f"{'floor s':>7} {'floor/bare':>10} {'tracked/floor':>13}")
        for n, launcher, tracked_s, bare_s, floor_s in rows:
            print(f"{n:>4}  {launcher:<10} {tracked_s:9.2f} {bare_s:7.2f} {tracked_s / bare_s:5.2f}x "
                  f"{(tracked_s - bare_s) / n:14.3f} {floor_s:7.2f} {floor_s / bare_s:9.2f}x "
                  f"{tracked_s / floor_s:12.2f}x")
        if not args.no_split:
            n = max(sizes)
            for launcher in launchers:
                profile = tmp / f"profile-{launcher}.prof"
                argv = [sys.executable, "-m", "cProfile", "-o", str(profile),
                        *tracked_command(n, launcher, store, f"profile-{launcher}", tmp / f"profile-{launcher}")]
                if launcher == "population":
                    argv.append("hydra.launcher.n_workers=1")  # in one process, so that cProfile sees every step
                wall = timed(argv, env, tmp)
                print(f"\nwhere the time goes, {launcher} launcher, {n} jobs under cProfile (wall {wall:.2f} s), "
                      "seconds per job:")
                for step, seconds in split(profile, wall, n).items():
                    print(f"  {step:<28} {seconds:7.3f}")
    print(f"\nload average after: {loadavg()}")


if __name__ == "__main__":
    main()
