"""The search sweepers end to end (hydra/sweeper=random|tpe, real Hydra multirun, real sqlite store, real Optuna
journal): sampling in the space, same seed same trials, TPE concentrating, pruning, resume after kill -9, joblib
workers, an invalid space refused, the dry run."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sweeper import names

from ...handshake import HANG, wait_for
from ..sweeper_helpers import ARTIFACTS, REPO, run_cli, runs_of, sqlite_uri

TINY = ["data=digits", "trainer.epochs=1", "trainer.blas_threads=1"]


def search(tmp_path: Path, name: str, args: list[str], sampler: str = "random"):
    """`mlp-sweep -m hydra/sweeper=<sampler> ARGS` with its outputs (store, study) under tmp_path/name."""
    where = tmp_path / name
    where.mkdir(exist_ok=True)
    return run_cli(["-m", f"hydra/sweeper={sampler}", *args, f"tracking.uri={sqlite_uri(where / 'mlflow.db')}"],
                   where)


def sweep_runs(tmp_path: Path, name: str):
    """(client, parent, children sorted by trial number) of the only sweep in tmp_path/name."""
    client, runs = runs_of(sqlite_uri(tmp_path / name / "mlflow.db"))
    parents = [r for r in runs if r.data.tags.get(names.ROLE) == names.ROLE_SWEEP_PARENT]
    children = [r for r in runs if names.TRIAL_NUMBER in r.data.tags]
    return client, parents, sorted(children, key=lambda r: int(r.data.tags[names.TRIAL_NUMBER]))


def study_in(outputs: Path):
    """The one Optuna study in <outputs>/studies."""
    import optuna

    from sweeper.sweep.search import open_storage

    [journal] = (outputs / "studies").glob("*.journal")
    storage = open_storage(str(journal))
    [name] = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def trial_values(study, key: str) -> list[float]:
    return [t.params[key] for t in sorted(study.trials, key=lambda t: t.number)]


@pytest.mark.slow
@pytest.mark.integration
def test_random_search_samples_the_space_in_log_scale_and_repeats_with_the_same_seed(tmp_path):
    args = ["hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=3", "hydra.sweeper.seed=3", *TINY,
            "optimizer.lr=tag(log, interval(0.0001, 1.0))", "optimizer.momentum=interval(0.0, 0.9)",
            "model.width=choice(8,16)"]
    proc = search(tmp_path, "a", args)
    assert proc.returncode == 0, proc.stderr
    client, [parent], children = sweep_runs(tmp_path, "a")
    assert [c.data.tags[names.TRIAL_NUMBER] for c in children] == ["0", "1", "2", "3", "4", "5"]
    lrs = [float(c.data.params["optimizer.lr"]) for c in children]
    assert all(1e-4 <= lr <= 1.0 for lr in lrs)
    assert all(0.0 <= float(c.data.params["optimizer.momentum"]) <= 0.9 for c in children)
    assert {c.data.params["model.width"] for c in children} <= {"8", "16"}
    # log scale: half of a log-uniform [1e-4, 1] lies below 0.01 (1 % of a uniform one), over three decades
    assert sum(lr < 0.01 for lr in lrs) >= 2 and max(lrs) / min(lrs) > 100
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags[names.TRIAL_STATE] == "COMPLETE"
        assert child.data.tags[names.CONFIG_HASH] and child.info.run_name.startswith("lr=")
        assert {a.path for a in client.list_artifacts(child.info.run_id)} == ARTIFACTS
    assert parent.info.status == "FINISHED" and parent.info.run_name == "random search of lr, momentum, width"
    assert parent.data.params[names.SEARCH_PARAM_PREFIX + "seed"] == "3"
    assert parent.data.params[names.SEARCH_PARAM_PREFIX + "study_name"] == parent.data.tags[names.STUDY_NAME]
    assert parent.data.params[names.SEARCH_PARAM_PREFIX + "space.optimizer.lr"] == "tag(log, interval(0.0001, 1.0))"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {names.OPTIMIZATION_HISTORY, names.PARALLEL_COORDINATES, "summary.md"} <= artifacts
    best = min(children, key=lambda c: c.data.metrics[names.BEST_VAL_LOSS])
    assert parent.data.tags[names.BEST_TRIAL] == best.data.tags[names.TRIAL_NUMBER]
    summary = Path(client.download_artifacts(parent.info.run_id, "summary.md", str(tmp_path))).read_text()
    order = [summary.index(c.info.run_name + " |") for c in sorted(children, key=lambda c: c.data.metrics[
        names.BEST_VAL_LOSS])]
    assert order == sorted(order)  # the summary lists the trials best first
    # the same seed again, untracked: the same trials with bit-identical objectives
    proc = search(tmp_path, "b", [*args, "tracking.enabled=false"])
    assert proc.returncode == 0, proc.stderr
    first, again = study_in(tmp_path / "a" / "outputs"), study_in(tmp_path / "b" / "outputs")
    assert [(t.params, t.value) for t in first.trials] == [(t.params, t.value) for t in again.trials]
    assert [t.value for t in first.trials] == [c.data.metrics[names.BEST_VAL_LOSS] for c in children]


@pytest.mark.slow
@pytest.mark.integration
def test_tpe_concentrates_its_later_trials_around_the_best_learning_rate(tmp_path):
    """One-dimensional lr on digits: too small learns nothing in an epoch, too large diverges. After its 5 random
    start-up trials TPE samples the last 6 trials in a narrower band (of log10 lr) than random search with the same
    seed does."""
    args = ["hydra.sweeper.n_trials=16", "hydra.sweeper.seed=0", "hydra.sweeper.n_startup_trials=5", *TINY,
            "tracking.enabled=false", "optimizer.lr=tag(log, interval(0.00001, 100.0))"]
    spreads = {}
    for sampler in ("random", "tpe"):
        proc = search(tmp_path, sampler, args, sampler=sampler)
        assert proc.returncode == 0, proc.stderr
        study = study_in(tmp_path / sampler / "outputs")
        assert len(study.trials) == 16 and all(t.state.name == "COMPLETE" for t in study.trials)
        spreads[sampler] = float(np.std(np.log10(trial_values(study, "optimizer.lr")[-6:])))
        if sampler == "tpe":
            best = study.best_params["optimizer.lr"]
            assert 1e-3 < best < 10  # the known good region
    assert spreads["tpe"] < 0.5 * spreads["random"], spreads


@pytest.mark.slow
@pytest.mark.integration
def test_median_pruning_stops_bad_learning_rates_early_and_keeps_complete_runs(tmp_path):
    args = ["hydra.sweeper.n_trials=8", "hydra.sweeper.seed=1", "hydra.sweeper.pruner=median",
            "hydra.sweeper.pruner_startup_trials=2", "data=digits", "trainer.epochs=3", "trainer.blas_threads=1",
            "optimizer.lr=tag(log, interval(0.00001, 1.0))"]
    proc = search(tmp_path, "p", args)
    assert proc.returncode == 0, proc.stderr
    client, [parent], children = sweep_runs(tmp_path, "p")
    assert len(children) == 8 and parent.data.params[names.SEARCH_PARAM_PREFIX + "pruner"] == "median"
    pruned = [c for c in children if c.data.tags[names.STOP_REASON] == names.STOP_PRUNED]
    kept = [c for c in children if c not in pruned]
    assert pruned and kept, [c.data.tags[names.STOP_REASON] for c in children]
    assert max(c.data.metrics[names.STEPS] for c in pruned) < max(c.data.metrics[names.STEPS] for c in kept)
    for run in pruned:  # a complete, honest record of a stopped trial
        assert run.info.status == "FINISHED" and run.data.tags[names.PRUNED_TAG] == "true"
        assert run.data.tags[names.TRIAL_STATE] == "PRUNED"
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == ARTIFACTS
        history = client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)
        assert len(history) == int(run.data.metrics[names.STEPS])
        assert names.BEST_VAL_LOSS in run.data.metrics
    for run in kept:
        assert names.PRUNED_TAG not in run.data.tags and run.data.tags[names.TRIAL_STATE] == "COMPLETE"
    study = study_in(tmp_path / "p" / "outputs")
    states = {t.number: t.state.name for t in study.trials}
    assert {int(c.data.tags[names.TRIAL_NUMBER]) for c in pruned} == {n for n, s in states.items() if s == "PRUNED"}


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.soak
def test_a_relaunch_after_kill_9_finishes_the_study_with_n_trials(tmp_path):
    where = tmp_path / "r"
    where.mkdir()
    args = ["-m", "hydra/sweeper=random", "hydra.sweeper.n_trials=5", "hydra.sweeper.seed=2", "data=digits",
            "trainer.epochs=4", "trainer.blas_threads=1", "optimizer.lr=tag(log, interval(0.001, 0.5))",
            f"tracking.uri={sqlite_uri(where / 'mlflow.db')}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env["MLP_SWEEPS_OUTPUTS"] = str(where / "outputs")
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=where, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def midway():  # two trials told, the third asked (its params sampled) and running in the launcher's process
        if not list((where / "outputs" / "studies").glob("*.journal")):
            return False
        trials = study_in(where / "outputs").trials
        # optuna writes an asked trial, then each sampled param: a kill in between leaves a trial without params
        # (seen under the soak's load), which the relaunch fails and has nothing to ask again
        return [t.state.name for t in trials].count("COMPLETE") >= 2 and any(
            t.state.name == "RUNNING" and t.params for t in trials)

    try:
        wait_for(midway, "the search to run its third trial", proc=proc)
    finally:
        proc.kill()
        proc.wait(timeout=HANG)
    killed = [t for t in study_in(where / "outputs").trials if t.state.name == "RUNNING"]
    assert len(killed) == 1
    again = run_cli(args, where)
    assert again.returncode == 0, again.stderr
    study = study_in(where / "outputs")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 5 and [t.state.name for t in study.trials].count("FAIL") == 1
    assert study.trials[killed[0].number].state.name == "FAIL"
    assert killed[0].params in [t.params for t in complete]  # asked again with the same values
    _, runs = runs_of(sqlite_uri(where / "mlflow.db"))
    finished = [r for r in runs if r.info.status == "FINISHED" and names.CONFIG_HASH in r.data.tags]
    hashes = [r.data.tags[names.CONFIG_HASH] for r in finished]
    assert len(hashes) == len(set(hashes)) == 5


@pytest.mark.slow
@pytest.mark.integration
def test_joblib_workers_run_a_batch_in_parallel_and_report_to_their_trials(tmp_path):
    args = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4",
            "hydra.sweeper.pruner=median", "hydra.sweeper.pruner_startup_trials=2", *TINY,
            "optimizer.lr=tag(log, interval(0.001, 0.5))"]
    proc = search(tmp_path, "j", args)
    assert proc.returncode == 0, proc.stderr
    _, [parent], children = sweep_runs(tmp_path, "j")
    assert [c.data.tags[names.TRIAL_NUMBER] for c in children] == ["0", "1", "2", "3"]
    assert {c.info.status for c in children} == {"FINISHED"}
    assert len({c.data.tags[names.PARENT_RUN_ID] for c in children}) == 1
    assert len({c.data.tags["mlp_sweeps.pid"] for c in children}) >= 2  # more than one worker process
    study = study_in(tmp_path / "j" / "outputs")
    # every worker reported its validation curve to its own trial
    for trial, child in zip(sorted(study.trials, key=lambda t: t.number), children):
        assert trial.intermediate_values and trial.params["optimizer.lr"] == float(child.data.params["optimizer.lr"])


def test_an_invalid_space_is_one_line_and_creates_nothing(tmp_path):
    proc = search(tmp_path, "bad", [*TINY, "optimizer.lr=interval(0, 1)"])
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "optimizer.lr" in lines[0] and "> 0" in lines[0], proc.stderr
    assert not (tmp_path / "bad" / "mlflow.db").exists()
    assert not (tmp_path / "bad" / "outputs" / "studies").exists()


def test_an_unknown_pruner_is_one_line(tmp_path):
    proc = search(tmp_path, "bad", [*TINY, "hydra.sweeper.pruner=hyperband", "optimizer.lr=interval(0.01, 0.1)"])
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "Error: hydra.sweeper.pruner='hyperband' is invalid: must be none | median | successive_halving"]
    assert not (tmp_path / "bad" / "mlflow.db").exists()


def test_the_dry_run_lists_the_space_and_the_first_batch_and_creates_nothing(tmp_path):
    proc = search(tmp_path, "dry", ["hydra/launcher=dryrun", "hydra.sweeper.n_jobs=3", *TINY,
                                    "optimizer.lr=tag(log, interval(0.003, 0.3))", "model.width=choice(32,64)"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Search space (random, seed 0, 20 trials, 3 per batch, pruner none)" in out
    assert "optimizer.lr=tag(log, interval(0.003, 0.3)); model.width=choice(32,64)" in out
    assert "Dry run: 3 job(s)" in out
    rows = [line for line in out.splitlines() if line.endswith("digits/default")]
    assert len(rows) == 3 and all("optimizer.lr=" in r and ("[32]" in r and "2,400" in r or "[64]" in r and
                                                            "4,800" in r) for r in rows), out
    assert not (tmp_path / "dry" / "mlflow.db").exists() and not (tmp_path / "dry" / "outputs").exists()


def readme_search_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Random and TPE search"):]
    block = section[section.index("```bash\n") + 8:]
    return [line for line in block[:block.index("```")].splitlines() if line.startswith("mlp-sweep")]


@pytest.mark.integration
@pytest.mark.parametrize("command", readme_search_commands())
def test_a_readme_search_command_runs_as_written_in_a_dry_run(tmp_path, command):
    """Each search command of the README, with its launcher replaced by the dry run (which trains nothing)."""
    import shlex

    args = [a for a in shlex.split(command, comments=True)[1:] if not a.startswith("hydra/launcher=")]
    proc = run_cli([*args, "hydra/launcher=dryrun"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Search space (" in proc.stdout and "Dry run:" in proc.stdout
    assert not (tmp_path / "outputs").exists()


def test_the_space_grammar_maps_to_optuna_distributions_grid_axes_and_fixed_values():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from sweeper.config.checks import ConfigError
    from sweeper.sweep.search import parse_space

    space = parse_space(["experiment=task3c", "optimizer.lr=tag(log, interval(0.003, 0.3))",
                         "optimizer.momentum=interval(0, 0.95)", "model.depth=int(interval(1, 3))",
                         "model.hidden_sizes=choice([64],[64, 64])", "trainer.seed=0,1", "+x=range(0,3)",
                         "optimizer.momentum=interval(0.5, 0.9)"])  # a later value of a key wins, as in Hydra
    assert space.distributions == {
        "optimizer.lr": FloatDistribution(0.003, 0.3, log=True),
        "model.depth": IntDistribution(1, 3),
        "model.hidden_sizes": CategoricalDistribution(["[64]", "[64,64]"]),
        "optimizer.momentum": FloatDistribution(0.5, 0.9),
    }
    assert space.grid == {"trainer.seed": ["0", "1"], "x": ["0", "1", "2"]} and space.prefixes["x"] == "+x"
    assert space.fixed == ["experiment=task3c"] and len(space.cells()) == 6
    with pytest.raises(ConfigError, match="not supported"):
        parse_space(["data=glob(*)"])
    with pytest.raises(ConfigError, match="is invalid"):
        parse_space(["optimizer.lr=tag(log, interval(0, 1))"])


def test_a_resumed_study_draws_a_new_sampler_stream():
    from sweeper.sweep.search import launch_seed

    assert launch_seed(7, 0) == 7  # a fresh study: the user's seed, so reruns are identical
    assert len({launch_seed(7, n) for n in (0, 3, 4)} | {launch_seed(8, 3)}) == 4


@pytest.mark.integration
def test_search_progress_counts_against_the_trials_this_launch_runs(tmp_path):
    """A search has no grid for the sweep callback to count: the progress line still reads k/N, N the trials to run."""
    proc = search(tmp_path, "n", ["hydra.sweeper.n_trials=2", "tracking.enabled=false", *TINY,
                                  "optimizer.lr=tag(log, interval(0.01, 0.5))"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [line.split("sweep progress: ", 1)[1].split(",")[0] for line in (proc.stdout + proc.stderr).splitlines()
            if "sweep progress: " in line]
    assert said == ["1/2 done", "2/2 done"], said


# Counts the Optuna storages a search opens in its launching process, then runs the CLI.
COUNTING_STORAGES = """
import atexit, sys
from optuna.storages.journal import JournalStorage
opened = []
original = JournalStorage.__init__
def counted(self, *args, **kwargs):
    opened.append(1)
    original(self, *args, **kwargs)
JournalStorage.__init__ = counted
atexit.register(lambda: sys.__stdout__.write(f"STORAGES={len(opened)}\\n"))
sys.argv = ["mlp-sweep", *sys.argv[1:]]
from sweeper.app import main
main()
"""


@pytest.mark.integration
def test_trials_in_the_launching_process_report_through_the_searchs_own_storage(tmp_path):
    """With the basic launcher every trial runs in the sweeper's process: each reports to its trial through the
    search's open storage instead of opening the journal and reading it whole again; the pruner still decides."""
    args = ["hydra/sweeper=random", "hydra.sweeper.n_trials=4", "hydra.sweeper.seed=1", "hydra.sweeper.pruner=median",
            "hydra.sweeper.pruner_startup_trials=1", "optimizer.lr=tag(log, interval(0.00001, 1.0))", *TINY,
            "trainer.epochs=2", f"tracking.uri={sqlite_uri(tmp_path / 'mlflow.db')}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env["MLP_SWEEPS_OUTPUTS"] = str(tmp_path / "outputs")
    proc = subprocess.run([sys.executable, "-c", COUNTING_STORAGES, "-m", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "STORAGES=1" in proc.stdout, proc.stdout[-500:]
    study = study_in(tmp_path / "outputs")
    reported = [t for t in study.trials if t.intermediate_values]
    assert len(study.trials) == 4 and len(reported) == 4  # every trial reported its curve through that storage
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
