"""Warm start of a search (hydra.sweeper.warm_start): an earlier grid's FINISHED runs enter the study as COMPLETE
trials with their objective, without retraining; runs outside the space or of another config stay out; a relaunch adds
nothing twice; an unknown sweep is one line before anything exists. Real Hydra multirun, real sqlite store, digits."""
from __future__ import annotations

import re
import shlex

import pytest
from sweeper import names

from ..sweeper_helpers import REPO, run_cli, runs_of, sqlite_uri
from .test_search import study_in


def readme_warm_start_commands() -> list[str]:
    section = (REPO / "README.md").read_text().split("#### Warm start", 1)[1]
    block = section[section.index("```bash\n") + 8:]
    return [line for line in block[:block.index("```")].splitlines() if line.startswith("mlp-sweep")]


def trained_runs(tmp_path):
    _, runs = runs_of(sqlite_uri(tmp_path / "outputs" / "mlflow.db"))
    return [r for r in runs if names.CONFIG_HASH in r.data.tags]


@pytest.mark.slow
@pytest.mark.integration
def test_the_readme_warm_start_enters_the_grid_as_trials_without_retraining(tmp_path):
    grid_command, search_command = readme_warm_start_commands()
    grid = run_cli(shlex.split(grid_command)[1:], tmp_path)
    assert grid.returncode == 0, grid.stderr[-3000:]
    grid_runs = {r.info.run_id: r for r in trained_runs(tmp_path)}
    assert len(grid_runs) == 4
    proc = run_cli(shlex.split(search_command)[1:], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    # lr=2.0 lies outside interval(0.005, 1.0)
    assert "warm start from outputs/lr_grid: 3 run(s) entered the study as trials, 1 skipped (1 outside the space)" \
        in out
    study = study_in(tmp_path / "outputs")
    warm = [t for t in study.trials if names.WARM_START_ATTR in t.user_attrs]
    assert sorted((t.params["optimizer.lr"], t.value, t.state.name) for t in warm) == sorted(
        (float(r.data.params["optimizer.lr"]), r.data.metrics[names.BEST_VAL_LOSS], "COMPLETE")
        for r in grid_runs.values() if r.data.params["optimizer.lr"] != "2.0")
    # n_trials counts the search's own trials: 3 trained, besides the 3 warm ones
    own = [t for t in study.trials if names.WARM_START_ATTR not in t.user_attrs]
    assert len(own) == 3 and all(t.state.name == "COMPLETE" for t in own)
    # no grid run was trained again: one FINISHED run per config_hash, the grid's runs untouched
    runs = trained_runs(tmp_path)
    hashes = [r.data.tags[names.CONFIG_HASH] for r in runs]
    assert len(hashes) == len(set(hashes))
    assert {r.info.run_id for r in runs} >= set(grid_runs)
    assert len(runs) == len(grid_runs) + 3  # the search's own trials (sampled floats: none equals a grid lr)
    # the same command again: the runs entered before are not added twice, and nothing is left to run
    again = run_cli(shlex.split(search_command)[1:], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"warm start from outputs/lr_grid: 0 run\(s\) entered the study as trials, 3 entered before",
                     again.stdout + again.stderr)
    assert len(study_in(tmp_path / "outputs").trials) == len(study.trials)


@pytest.mark.slow
@pytest.mark.integration
def test_runs_of_another_config_stay_out_and_an_unknown_sweep_is_one_line(tmp_path):
    grid = run_cli(["-m", "data=digits", "trainer.epochs=1", "optimizer.lr=0.01,0.1",
                    f"hydra.sweep.dir={tmp_path / 'grid'}"], tmp_path)
    assert grid.returncode == 0, grid.stderr[-3000:]
    space = ["hydra/sweeper=random", "hydra.sweeper.n_trials=1", "data=digits", "optimizer.lr=interval(0.005, 1.0)"]
    # 2 epochs instead of 1: the same lr values, another config
    proc = run_cli(["-m", *space, "trainer.epochs=2", f"hydra.sweeper.warm_start={tmp_path / 'grid'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 run(s) entered the study as trials, 2 skipped (2 another config)" in proc.stdout + proc.stderr
    bad = run_cli(["-m", *space, "trainer.epochs=1", "hydra.sweeper.warm_start=nope"], tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    (line,) = bad.stderr.strip().splitlines()
    assert line.startswith("Error: hydra.sweeper.warm_start=nope is invalid: no sweep with parent run id or sweep id "
                           "'nope'")
