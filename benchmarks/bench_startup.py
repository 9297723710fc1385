"""CPU time of the CLI's start-up paths, measured in one run against a bare interpreter start.

    python benchmarks/bench_startup.py [--repeats 3]

Commands, each in a fresh process (outputs and the store in a temp dir, no network data):
  bare        python -c pass                                   (the interpreter alone: the floor)
  --help      mlp-sweep --help
  --cfg job   mlp-sweep experiment=task3c --cfg job            (compose and print, no training)
  digits      mlp-sweep data=digits trainer.epochs=1            (a tracked one-epoch run: its time is set-up:
                                                               imports, store creation, run, artifacts; ~46 steps)
  dry run     mlp-sweep -m model.width=4,8 data=digits hydra/launcher=dryrun   (the grid composed and checked)
  sweep of 2  mlp-sweep -m model.width=4,8 data=digits trainer.epochs=1        (a tracked sweep: parent, 2 runs,
                                                               drawer, report; its CPU includes the drawer's)
  job start   what a submitit/Slurm job process pays before its training: it unpickles a composed config, so it
              imports the task function's modules (sweeper, Hydra, mlp_core) and opens the store (MLflow's client and
              its sqlite store); it does not compose. Measured as those imports plus one store call.
Prints the least user+sys CPU seconds of --repeats runs of each (children's rusage), the ratio to the bare start, and
which of the heavy packages each command imported (from the child's own sys.modules).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HEAVY = ("mlflow", "matplotlib", "sklearn", "optuna", "scipy")
# Runs the CLI as the console script does, then reports which heavy packages ended up imported (also on SystemExit).
PROBE = """
import atexit, sys
atexit.register(lambda: sys.__stderr__.write("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules) + "\\n"))
sys.argv = ["mlp-sweep", *{args!r}]
from sweeper.app import main
main()
"""
COMMANDS = {
    "--help": ["--help"],
    "--cfg job": ["experiment=task3c", "--cfg", "job"],
    "digits": ["data=digits", "trainer.epochs=1"],
    "dry run": ["-m", "model.width=4,8", "data=digits", "hydra/launcher=dryrun"],
    "sweep of 2": ["-m", "model.width=4,8", "data=digits", "trainer.epochs=1"],
}
# A submitit/Slurm job's own start (see the docstring): the modules its pickled task function needs, then the store.
JOB_START = """
import atexit, os, sys
atexit.register(lambda: sys.__stderr__.write("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules) + "\\n"))
import mlp_core, sweeper.app
from sweeper.tracking.store import client_for, default_tracking_uri
client_for(default_tracking_uri()).search_experiments(max_results=1)
"""


def cpu_seconds(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    heavy = next((line[6:] for line in proc.stderr.splitlines() if line.startswith("HEAVY=")), "")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
        env.update(MLP_SWEEPS_OUTPUTS=str(Path(tmp) / "outputs"), MLP_SWEEPS_OFFLINE="1")
        bare = min(cpu_seconds([sys.executable, "-c", "pass"], env, tmp)[0] for _ in range(args.repeats))
        print(f"{'command':<12} {'CPU s':>7} {'x bare':>7}  imports of {', '.join(HEAVY)}")
        print(f"{'bare':<12} {bare:7.2f} {1.0:7.1f}")
        probes = {label: PROBE.format(heavy=HEAVY, args=cli_args) for label, cli_args in COMMANDS.items()}
        probes["job start"] = JOB_START.format(heavy=HEAVY)
        for label, code in probes.items():
            runs = [cpu_seconds([sys.executable, "-c", code], env, tmp) for _ in range(args.repeats)]
            seconds = min(s for s, _ in runs)
            print(f"{label:<12} {seconds:7.2f} {seconds / bare:7.1f}  {runs[0][1] or 'none'}")


if __name__ == "__main__":
    main()
