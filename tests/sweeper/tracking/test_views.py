"""The MLflow UI set-up, without a browser (tests/sweeper/tracking/test_ui_browser.py opens it in one): the
experiment's tags, the saved view's format as the UI reads it, the printed link and its fallback, one colour per
config shared by comparison.png and the runs' tags, readable model params, and the config label the view groups by.

One real sqlite store (migrated once per session, then copied), real Hydra composition, real figures.
"""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.colors import to_hex
from mlflow.tracking import MlflowClient

from sweeper import names
from sweeper.job import prepare, run_params
from sweeper.config.checks import to_core
from sweeper.config.identity import config_label, run_hashes
from sweeper.reporting.history import RunHistory
from sweeper.reporting.colours import PALETTE, config_colour, run_colours
from sweeper.reporting.plots import MAX_COLOURED, comparison_figure
from sweeper.tracking import views
from sweeper.tracking.mlflow_private import views_format
from sweeper.tracking.store import get_or_create_experiment, tag_experiment

from ..sweeper_helpers import compose_cfg, sqlite_uri


@pytest.fixture
def client(migrated_db, tmp_path):
    path = tmp_path / "mlflow.db"
    shutil.copy(migrated_db, path)
    return MlflowClient(sqlite_uri(path))


def test_the_tool_creates_an_experiment_ranked_by_val_loss_without_a_kind_tag_the_ui_ignores(client, tmp_path):
    experiment_id = get_or_create_experiment(client, "mlp-sweeps", (tmp_path / "art").as_uri())
    tags = client.get_experiment(experiment_id).tags
    # MLflow 3.17's UI takes its layout from the link, never from mlflow.experimentKind (views_format's docstring)
    assert "mlflow.experimentKind" not in tags
    assert tags[names.PRIMARY_METRIC] == names.VAL_LOSS
    assert tags[names.PRIMARY_METRIC_GREATER_IS_BETTER] == "False"
    # an experiment of an older release gets them when a sweep starts (not on opening it), a user's choice is kept
    old = client.create_experiment("old", artifact_location=(tmp_path / "old").as_uri(),
                                   tags={names.PRIMARY_METRIC: "val/accuracy"})
    assert get_or_create_experiment(client, "old", None) == old
    assert names.PRIMARY_METRIC_GREATER_IS_BETTER not in client.get_experiment(old).tags
    tag_experiment(client, old)
    tags = client.get_experiment(old).tags
    assert tags[names.PRIMARY_METRIC_GREATER_IS_BETTER] == "False" and tags[names.PRIMARY_METRIC] == "val/accuracy"


def read_view(client, experiment_id, view_id):
    """The view as the UI parses it: the wrapper's types, then the state's JSON."""
    wrapper = json.loads(client.get_experiment(experiment_id).tags[names.SHARED_VIEW_PREFIX + view_id])
    assert isinstance(wrapper["name"], str) and isinstance(wrapper["createdAt"], int)
    assert isinstance(wrapper["state"], str)  # a JSON string inside the JSON: a dict here makes the UI ignore it
    return wrapper, json.loads(wrapper["state"])


GRID = [["experiment=task3c", f"model.width={w}", f"model.depth={d}", "trainer.epochs=2"] for w in (16, 32) for d in (1, 2)]


def test_the_sweep_view_shows_its_runs_grouped_by_config_with_three_step_charts(client, tmp_path):
    experiment_id = get_or_create_experiment(client, "mlp-sweeps", (tmp_path / "art").as_uri())
    view = views.write_sweep_view(client, experiment_id, "12-00-00-ab12cd34", "parent123", "task3_tricks", num_jobs=250)
    assert view == "sweep-12-00-00-ab12cd34"
    wrapper, state = read_view(client, experiment_id, view)
    assert wrapper["name"] == "task3_tricks"
    assert state["searchFilter"] == "tags.`mlp_sweeps.sweep.12-00-00-ab12cd34` = 'parent123'"
    assert state["runsHiddenMode"] == "SHOW_ALL"
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": names.CONFIG_LABEL}]
    assert state["useGroupedValuesInCharts"] is False  # each run its own line, in its mlflow.runColor
    shown = [c for c in state["compareRunCharts"] if not c["deleted"]]
    assert [c["metricKey"] for c in shown] == [names.VAL_LOSS, names.VAL_ACCURACY, names.TRAIN_LOSS]
    assert all(c["type"] == "LINE" and c["xAxisKey"] == "step" and c["runsCountToCompare"] == 250 for c in shown)
    # every other metric the runs log is listed as a deleted chart, or the UI would add it back
    deleted = {c["metricKey"] for c in state["compareRunCharts"] if c["deleted"]}
    assert deleted == set(names.CURVE_METRICS + names.SUMMARY_METRICS) - {c["metricKey"] for c in shown}
    sections = {s["uuid"] for s in state["compareRunSections"]}
    assert {c["metricSectionId"] for c in state["compareRunCharts"]} <= sections
    assert "runsExpanded" not in state  # the UI drops it (../shared/NOTES.md): grouping shows the children


def test_the_view_is_readable_log_losses_one_chart_a_row_a_count_and_the_columns_that_rank_the_runs(client, tmp_path):
    experiment_id = get_or_create_experiment(client, "mlp-sweeps", (tmp_path / "art").as_uri())
    view = views.write_sweep_view(client, experiment_id, "s", "p", "sweep", num_jobs=len(GRID), jobs=GRID)
    _, state = read_view(client, experiment_id, view)
    scale = {c["metricKey"]: c["scaleType"] for c in state["compareRunCharts"] if not c["deleted"]}
    # the losses fall from ~2.3 at step 0 to ~0.1: on a linear axis the trained part is a few pixels high
    assert scale == {names.VAL_LOSS: "log", names.TRAIN_LOSS: "log", names.VAL_ACCURACY: "linear"}
    (ours,) = [s for s in state["compareRunSections"] if s["display"]]
    assert ours["name"] == "4 runs: width x depth"  # a legend shows two lines of names: the title says how many
    assert ours["columns"] == 1  # one chart a row: the widest legend
    columns = ["metrics.`best/val_loss`", "tags.`stop_reason`", "params.`model.width`", "params.`model.depth`"]
    assert state["selectedColumns"] == columns
    assert state["columnOrder"] == ["attributes.`Run Name`", *columns]
    assert state["columnWidths"]["attributes.`Run Name`"] >= 400
    # a search (no grid): no swept columns, no count
    _, state = read_view(client, experiment_id, views.write_sweep_view(client, experiment_id, "t", "p", "search"))
    assert state["selectedColumns"] == columns[:2]
    assert [s["name"] for s in state["compareRunSections"] if s["display"]] == ["all runs of the search"]


@pytest.mark.parametrize("jobs, swept", [
    (GRID, ["model.width", "model.depth"]),
    ([["+experiment=task2c", "data=digits"], ["+experiment=task3a", "data=digits"]], ["name"]),  # a preset: its name
    ([["optimizer=sgd", "optimizer.lr=0.1"], ["optimizer=momentum", "optimizer.lr=0.1"]], []),  # a group: no param
    ([["model.width=8"]], []),
])
def test_the_swept_params_are_the_keys_whose_value_differs_between_jobs(jobs, swept):
    assert views.swept_params(jobs) == swept


def test_make_ui_links_the_latest_sweep_view(client, tmp_path, monkeypatch):
    assert views.latest_view(client) == ("0", None)  # an empty store: the Default experiment's runs page
    experiment_id = get_or_create_experiment(client, "mlp-sweeps", (tmp_path / "art").as_uri())
    assert views.latest_view(client) == (experiment_id, None)
    for seconds, sweep in ((2000.0, "newer"), (1000.0, "older")):  # written out of order: createdAt decides
        monkeypatch.setattr(views, "time", SimpleNamespace(time=lambda: seconds))
        views.write_sweep_view(client, experiment_id, sweep, "p", sweep, jobs=GRID)
    client.set_experiment_tag(experiment_id, names.SHARED_VIEW_PREFIX + "sweep-hand", "not json")
    assert views.latest_view(client) == (experiment_id, "sweep-newer")


def test_the_link_opens_the_view_and_falls_back_to_the_plain_runs_page(client, tmp_path, monkeypatch):
    sqlite = sqlite_uri(tmp_path / "mlflow.db")
    lines = views.sweep_link_lines(sqlite, "7", "sweep-x")
    assert lines[0] == f"MLflow UI: start it with `mlflow ui --backend-store-uri {sqlite} --port 5000`, then open"
    assert lines[1].split()[0] == ("http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
                                   "&viewStateShareKey=sweep-x&compareRunsMode=CHART")
    project = sqlite_uri(views.REPO_ROOT / "outputs" / "mlflow.db")
    assert "start it with `make ui`" in views.sweep_link_lines(project, "7", "sweep-x")[0]
    http = views.sweep_link_lines("http://user:secret@host:5000/", "7", None)
    assert http == ["MLflow UI:", "  http://***@host:5000/#/experiments/7/runs?workflowType=machine_learning"
                                  "   (the experiment's runs)"]

    # another MLflow minor: no view is written (its format may differ), the link opens the plain runs page
    assert views_format.view_format_verified(views_format.VERIFIED_MLFLOW)
    assert not views_format.view_format_verified("3.18.0") and not views_format.view_format_verified("4.0.0")
    monkeypatch.setattr(views, "view_format_verified", lambda: False)
    experiment_id = get_or_create_experiment(client, "mlp-sweeps", (tmp_path / "art").as_uri())
    assert views.write_sweep_view(client, experiment_id, "s", "p", "sweep") is None
    assert not [k for k in client.get_experiment(experiment_id).tags if k.startswith(names.SHARED_VIEW_PREFIX)]


def test_one_colour_per_config_in_the_figure_and_the_ui():
    assert len(set(config_colour(i) for i in range(20))) == 20
    assert [config_colour(i) for i in range(3)] == ["#1f77b4", "#ff7f0e", "#2ca02c"]  # matplotlib's C0, C1, C2
    with pytest.raises(ValueError, match="-1"):
        config_colour(-1)
    # two seeds of config 0, one run of config 1: the seeds share a colour
    assert run_colours([["a", "b"], ["c"]]) == {"a": PALETTE[0], "b": PALETTE[0], "c": PALETTE[1]}
    # comparison.png draws its i-th config in config_colour(i): the colour finalize_sweep tags its runs with
    curve = RunHistory(train_loss=np.array([1.0, 0.5]), val_steps=np.array([0, 1]), val_loss=np.array([1.0, 0.6]),
                       val_accuracy=np.array([0.5, 0.7]), train_accuracy=np.array([0.5, 0.7]))
    # (up to MAX_COLOURED configs: beyond that the figure draws all but the best ones in grey; test_plots.py)
    figure = comparison_figure({f"config {i}": [curve] for i in range(MAX_COLOURED)})
    drawn = [to_hex(line.get_color()) for line in figure.axes[1].get_lines()]
    assert drawn == [config_colour(i) for i in range(MAX_COLOURED)]


def job_of(overrides):
    return prepare(compose_cfg(overrides))


@pytest.mark.parametrize("overrides, sizes, width, depth", [
    (["model.width=64", "model.depth=1"], [64], 64, 1),
    (["model.hidden_sizes=[60,60]"], [60, 60], 60, 2),
    (["model.hidden_sizes=[128,32]", "model.width=7"], [128, 32], 128, 2),
])
def test_params_carry_the_effective_model_shape_and_leave_the_run_identity_alone(overrides, sizes, width, depth):
    job = job_of(["data=digits", *overrides])
    hashes = run_hashes(job.container, job.threads)
    model_cfg, _ = to_core(job.cfg)
    params = run_params(job, model_cfg, 1234)
    assert params[names.HIDDEN_SIZES_PARAM] == sizes == params[names.EFFECTIVE_HIDDEN_SIZES_PARAM]
    assert (params[names.WIDTH_PARAM], params[names.DEPTH_PARAM], params[names.NUM_HIDDEN_LAYERS_PARAM]) == (
        width, depth, depth)
    assert run_hashes(job.container, job.threads) == hashes  # identity hashes the config, never the params


def test_the_config_label_is_readable_and_shared_by_the_seeds_of_one_config():
    jobs = [job_of(["experiment=task3c", "data=digits", f"trainer.seed={seed}"]) for seed in (0, 1)]
    noseed = {run_hashes(j.container, j.threads)[1] for j in jobs}
    assert len(noseed) == 1
    labels = {config_label(j.cfg.name, ["experiment=task3c", "data=digits", f"trainer.seed={s}"], noseed.copy().pop())
              for j, s in zip(jobs, (0, 1))}
    (label,) = labels
    assert label == f"task3c data=digits ({noseed.pop()[:8]})"
    other = config_label("task3c", ["model.width=32"], "0123456789abcdef")
    assert other == "task3c width=32 (01234567)"



@pytest.mark.parametrize("argv, says", [
    (["--store", "missing.db"], "--store missing.db: no such file; pass an MLflow sqlite store (a sweep creates "
                                "outputs/mlflow.db)"),
    (["--port", "0"], "--port 0: expected a TCP port, 1 to 65535"),
])
def test_make_ui_refuses_bad_input_in_one_sentence_before_starting_anything(argv, says, migrated_db, tmp_path,
                                                                            tmp_path_factory, monkeypatch, capsys):
    store = shutil.copy(migrated_db, tmp_path_factory.mktemp("store") / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        views.main(["--store", str(store), *argv])  # the later --store wins
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"make ui: error: {says}"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store or mlruns created here
