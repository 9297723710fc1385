"""The confirm sweeper (hydra/sweeper=confirm): its schedule and correction against closed forms, its looks on
constructed outcomes, and end to end (real Hydra multirun, real sqlite store, digits): it stops adding seeds once the
best is separated, spends at most max_seeds when it cannot separate, never retrains a FINISHED run, and refuses bad
knobs in one line before anything exists."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sweeper import names
from sweeper.config.checks import ConfigError
from sweeper.sweep import confirm_plan as confirm

from ..sweeper_helpers import REPO, run_cli, runs_of, sqlite_uri


# ------------------------------------------------------------------------------------------------ the plan

def test_the_schedule_looks_after_3_then_every_2_new_seeds_up_to_the_budget():
    assert confirm.schedule(grid_seeds=1, max_seeds=10) == [3, 5, 7, 9]
    assert confirm.schedule(grid_seeds=1, max_seeds=11) == [3, 5, 7, 9, 10]  # the budget is always the last look
    assert confirm.schedule(grid_seeds=3, max_seeds=6) == [3]
    assert confirm.schedule(grid_seeds=3, max_seeds=5) == []  # fewer than 3 new seeds: no look at all


def test_each_test_runs_at_one_minus_confidence_over_every_look_and_pair():
    # 4 looks x 3 pairs (top 3) = 12 tests sharing 0.05
    assert confirm.corrected_alpha(0.95, looks=4, configs=3) == pytest.approx(0.05 / 12)
    assert confirm.corrected_alpha(0.99, looks=1, configs=2) == pytest.approx(0.01)


def test_added_seeds_are_the_smallest_integers_the_grid_did_not_run():
    assert confirm.new_seeds([0], 3) == [1, 2, 3]
    assert confirm.new_seeds([0, 2, 5], 4) == [1, 3, 4, 6]


def test_the_grid_jobs_group_into_configs_by_everything_but_the_seed():
    jobs = [["model.width=8", "trainer.seed=0", "data=digits"], ["model.width=8", "trainer.seed=1", "data=digits"],
            ["model.width=16", "trainer.seed=0", "data=digits"], ["model.width=16", "trainer.seed=1", "data=digits"]]
    configs = confirm.grid_configs(jobs, default_seed=7)
    assert [(c.overrides, c.seeds, c.label) for c in configs] == [
        (["model.width=8", "data=digits"], [0, 1], "width=8"), (["model.width=16", "data=digits"], [0, 1], "width=16")]
    # no seed axis: every config has the config's own seed
    assert [c.seeds for c in confirm.grid_configs([["optimizer.lr=0.1"], ["optimizer.lr=0.2"]], 7)] == [[7], [7]]
    # values equal to 4 significant digits (an earlier search's trials): told apart by their whole overrides
    close = confirm.grid_configs([["optimizer.lr=0.0123441", "data=digits"], ["optimizer.lr=0.0123449", "data=digits"],
                                  ["optimizer.lr=0.5", "data=digits"]], 0)
    assert [c.label for c in close] == ["optimizer.lr=0.0123441 data=digits", "optimizer.lr=0.0123449 data=digits",
                                        "lr=0.5"]


# ------------------------------------------------------------------------------------------------ the looks

def _plan(k: int = 2, looks: int = 1, confidence: float = 0.95, maximize: bool = False) -> confirm.Plan:
    settings = confirm.Settings(top_k=k, confidence=confidence,
                                objective=names.BEST_VAL_ACCURACY if maximize else names.BEST_VAL_LOSS)
    configs = [confirm.Config([f"x={i}"], label=f"x={i}") for i in range(k)]
    return confirm.Plan(settings, configs, [], 0, [0], list(range(3, 3 + 2 * looks, 2)), k,
                        confirm.corrected_alpha(confidence, looks, k))


def test_a_clear_difference_is_separated_with_the_right_sign_and_size():
    plan = _plan(maximize=True)
    a, b = plan.configs
    # b is better by 0.10 (+- 0.01) on every seed: the best is b, the difference 0.10, p far below alpha = 0.05
    values = {a.label: {1: 0.50, 2: 0.60, 3: 0.55, 4: 0.40}, b.label: {1: 0.61, 2: 0.69, 3: 0.65, 4: 0.51}}
    found = confirm.look(plan, [a, b], values, [1, 2, 3, 4])
    assert found.best == b.label and found.separated
    c = found.comparisons[a.label]
    assert c["n"] == 4 and c["difference"] == pytest.approx(0.1025) and c["p_value"] < 0.001
    assert confirm.sentence(plan, [found], names.BEST_VAL_ACCURACY).startswith(
        f"{b.label} is confirmed best of the top 2: it beats {a.label} by 0.1025 val accuracy over 4 added seeds")


def test_overlapping_seeds_are_not_distinguishable():
    plan = _plan()
    a, b = plan.configs
    values = {a.label: {1: 0.50, 2: 0.60, 3: 0.55}, b.label: {1: 0.52, 2: 0.57, 3: 0.56}}  # differences +-, mean ~0
    found = confirm.look(plan, [a, b], values, [1, 2, 3])
    assert not found.separated and not found.comparisons[b.label]["separated"]
    assert "is not distinguishable from" in confirm.sentence(plan, [found], names.BEST_VAL_LOSS)


def test_a_p_value_under_the_plain_level_but_over_the_corrected_one_is_not_separated():
    # 4 looks x 3 pairs: alpha = 0.05 / 12 = 0.0042; a comparison at p ~ 0.01 would pass an uncorrected test
    plan = _plan(k=3, looks=4)
    a, b, c = plan.configs
    values = {a.label: {1: 1.0, 2: 2.0, 3: 3.0}, b.label: {1: 2.0, 2: 3.4, 3: 4.2}, c.label: {1: 5.0, 2: 6.0, 3: 7.0}}
    found = confirm.look(plan, [a, b, c], values, [1, 2, 3])
    assert found.best == a.label
    low = found.comparisons[b.label]
    assert 0.0042 < low["p_value"] < 0.05 and not low["separated"] and not found.separated


# ------------------------------------------------------------------------------------------------ end to end

TINY = ["data=digits", "trainer.epochs=1", "trainer.blas_threads=1"]


def confirm_sweep(tmp_path: Path, args: list[str], sweep_dir: str):
    return run_cli(["-m", "hydra/sweeper=confirm", *TINY, *args, f"hydra.sweep.dir={tmp_path / sweep_dir}"],
                   tmp_path)


def finished_runs(tmp_path: Path) -> list:
    _, runs = runs_of(sqlite_uri(tmp_path / "outputs" / "mlflow.db"))
    return [r for r in runs if names.CONFIG_HASH in r.data.tags and r.info.status == "FINISHED"]


@pytest.mark.slow
@pytest.mark.integration
def test_the_readme_confirm_sweep_stops_once_separated_and_a_relaunch_trains_nothing(tmp_path):
    """README's example ("More seeds where it matters"), as written: two learning rates far apart."""
    readme = (REPO / "README.md").read_text()
    command = "mlp-sweep -m hydra/sweeper=confirm data=digits trainer.epochs=1 optimizer.lr=0.0001,0.5"
    assert command in readme
    proc = run_cli(command.split()[1:] + [f"hydra.sweep.dir={tmp_path / 'first'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = finished_runs(tmp_path)
    # the grid (2 configs x seed 0), then one round of 3 added seeds each: separated at the first look, no second
    assert sorted((r.data.params["optimizer.lr"], r.data.params[names.SEED_PARAM]) for r in runs) == sorted(
        (lr, str(seed)) for lr in ("0.0001", "0.5") for seed in range(4))
    result = json.loads((tmp_path / "first" / names.CONFIRM_FILE).read_text())
    assert result["schedule"] == [3, 5, 7, 9] and len(result["looks"]) == 1 and result["added_runs"] == 6
    sentence = result["sentence"]
    assert sentence.startswith("lr=0.5 is confirmed best of the top 2: it beats lr=0.0001 by "), sentence
    assert f"confirm: {sentence}" in proc.stdout.splitlines()
    summary = (tmp_path / "first" / "summary.md").read_text()
    assert "## Confirmed with more seeds? (hydra/sweeper=confirm)" in summary and f"Confirm: {sentence}" in summary
    _, every = runs_of(sqlite_uri(tmp_path / "outputs" / "mlflow.db"))
    (parent,) = [r for r in every if r.data.tags.get(names.ROLE) == names.ROLE_SWEEP_PARENT]
    assert parent.data.tags[names.CONFIRM_VERDICT] == sentence
    assert parent.data.params[names.CONFIRM_PARAM_PREFIX + "schedule"] == "3,5,7,9"
    # the same command again: every job, grid and added seeds, is reused; nothing is trained, the verdict is the same
    again = run_cli(command.split()[1:] + [f"hydra.sweep.dir={tmp_path / 'second'}"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "sweep progress: 8/8 done, 8 reused, 0 failed, all jobs ended" in again.stdout + again.stderr
    assert sorted(r.info.run_id for r in finished_runs(tmp_path)) == sorted(r.info.run_id for r in runs)
    assert json.loads((tmp_path / "second" / names.CONFIRM_FILE).read_text())["sentence"] == sentence


@pytest.mark.slow
@pytest.mark.integration
def test_configs_within_seed_noise_spend_max_seeds_and_are_reported_not_distinguishable(tmp_path):
    proc = confirm_sweep(tmp_path, ["hydra.sweeper.max_seeds=6", "model.width=32,33"], "sweep")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "sweep" / names.CONFIRM_FILE).read_text())
    assert result["schedule"] == [3, 5] and [look["seeds"] for look in result["looks"]] == [3, 5]
    assert result["alpha"] == pytest.approx(0.05 / 2)
    # 6 seeds per config in all (the grid's one and 5 added), never more
    seeds = sorted((r.data.params["model.width"], int(r.data.params[names.SEED_PARAM])) for r in finished_runs(tmp_path))
    assert seeds == sorted((w, s) for w in ("32", "33") for s in range(6))
    assert "is not distinguishable from" in result["sentence"] and "max_seeds=6 spent" in result["sentence"]


@pytest.mark.slow
@pytest.mark.integration
def test_confirming_an_earlier_search_reuses_its_runs_and_adds_seeds_to_its_top_configs(tmp_path):
    search = run_cli(["-m", "hydra/sweeper=random", "hydra.sweeper.n_trials=3", *TINY,
                      "optimizer.lr=tag(log, interval(0.001, 1.0))"], tmp_path)
    assert search.returncode == 0, search.stderr[-3000:]
    trials = finished_runs(tmp_path)
    (sweep_id,) = {r.data.tags[names.SWEEP_ID] for r in trials}
    proc = confirm_sweep(tmp_path, [f"hydra.sweeper.from_sweep={sweep_id}", "hydra.sweeper.top_k=2",
                                    "hydra.sweeper.max_seeds=4"], "confirm")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the search's 3 trials are the first round, all reused; then 3 new seeds for each of the 2 best
    assert "sweep progress: 3/3 done, 3 reused, 0 failed, all jobs ended" in proc.stdout + proc.stderr
    by_loss = sorted(trials, key=lambda r: r.data.metrics[names.BEST_VAL_LOSS])
    top = {r.data.params["optimizer.lr"] for r in by_loss[:2]}
    added = [r for r in finished_runs(tmp_path) if r.info.run_id not in {t.info.run_id for t in trials}]
    assert sorted((r.data.params["optimizer.lr"], r.data.params[names.SEED_PARAM]) for r in added) == sorted(
        (lr, str(seed)) for lr in top for seed in (1, 2, 3))
    result = json.loads((tmp_path / "confirm" / names.CONFIRM_FILE).read_text())
    assert result["configs"] == 3 and len(result["top"]) == 2
    (parent,) = [r for r in runs_of(sqlite_uri(tmp_path / "outputs" / "mlflow.db"))[1]
                 if r.data.tags.get(names.CONFIRM_VERDICT)]
    assert parent.info.run_name == f"confirm {sweep_id}"
    # a sweep id that does not exist: one line, before any run
    bad = confirm_sweep(tmp_path, ["hydra.sweeper.from_sweep=nope"], "bad")
    assert bad.returncode == 1 and "hydra.sweeper.from_sweep=nope is invalid: no sweep with parent run id or " \
        "sweep id 'nope'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("knob, said", [
    ("hydra.sweeper.top_k=1", "hydra.sweeper.top_k=1 is invalid: must be an integer >= 2"),
    ("hydra.sweeper.confidence=1.5", "hydra.sweeper.confidence=1.5 is invalid: must be a number between 0.5 and 1"),
    ("hydra.sweeper.max_seeds=3", "hydra.sweeper.max_seeds=3 is invalid: the grid runs 2 seed(s) per config and the "
                                  "first look needs 3 new ones, so it must be >= 5"),
    ("hydra.sweeper.objective=val_loss", "hydra.sweeper.objective='val_loss' is invalid: must be a summary metric"),
])
def test_a_bad_knob_is_one_line_before_any_run_exists(tmp_path, knob, said):
    proc = confirm_sweep(tmp_path, [knob, "model.width=8,16", "trainer.seed=0,1"], "sweep")
    assert proc.returncode == 1
    assert said in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists() or not finished_runs(tmp_path)


@pytest.mark.parametrize("sweeper, typo, said", [
    ("confirm", "hydra.sweeper.topk=3", "did you mean 'hydra.sweeper.top_k'?"),
    ("tpe", "hydra.sweeper.n_trail=3", "did you mean 'hydra.sweeper.n_trials'?"),
])
def test_a_misspelled_sweeper_knob_names_the_closest_one(tmp_path, sweeper, typo, said):
    proc = run_cli(["-m", f"hydra/sweeper={sweeper}", typo, *TINY, "model.width=8,16"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"Error: unknown config key '{typo.split('=')[0]}' of hydra/sweeper={sweeper}") and said in line


def test_without_a_store_it_is_refused_before_any_job(tmp_path):
    proc = confirm_sweep(tmp_path, ["tracking.enabled=false", "model.width=8,16"], "sweep")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "hydra/sweeper=confirm reads its runs' results from the MLflow store: set tracking.enabled=true" in \
        proc.stderr
    assert not (tmp_path / "sweep" / "0").exists()  # no job ran


def test_a_grid_of_one_config_is_refused(tmp_path):
    proc = confirm_sweep(tmp_path, ["trainer.seed=0,1"], "sweep")
    assert proc.returncode == 1 and "hydra/sweeper=confirm needs a grid of at least 2 configs" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_settings_check_their_knobs():
    with pytest.raises(ConfigError, match="direction"):
        confirm.Settings(direction="up")
    assert confirm.Settings(objective=names.BEST_VAL_ACCURACY).maximize
    assert not confirm.Settings().maximize
