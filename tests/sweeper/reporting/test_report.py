"""Run selection, tables, finalize_sweep and mlp-sweep-report against a real temporary sqlite MLflow store.

The store is created once for the module (migrations take ~7 s) and filled with fake sweeps that follow the naming
contract (sweeper.names): a width sweep (parent + 3 children, one FAILED with no metrics), its resumed launch (reuses
the finished [64] run, retrains [128]) and a seed sweep (2 configs x 2 seeds).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytestmark = pytest.mark.integration

mlflow = pytest.importorskip("mlflow")
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from sweeper import names  # noqa: E402
from sweeper.reporting import cli  # noqa: E402
from sweeper.reporting.finalize import finalize_sweep  # noqa: E402
from sweeper.reporting.history import RunHistory, history_from_metrics, load_history  # noqa: E402
from sweeper.reporting.selection import select_runs  # noqa: E402
from sweeper.reporting.tables import (  # noqa: E402
    METRIC_FIELDS,
    SUMMARY_FIELDS,
    SummaryRow,
    best_row,
    group_rows,
    mean_std,
    parse_overrides,
    preset_name,
    summary_row,
    summary_rows,
)

from ...handshake import HANG  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
NUM_STEPS = 1200
VAL_EVERY = 100


def curves(best_loss: float, best_acc: float, stop: int = NUM_STEPS):
    """Per-step train loss and validation points whose minimum loss / maximum accuracy are exactly the given values."""
    steps = np.arange(stop)
    train = best_loss + 2.0 * np.exp(-steps / 150.0)
    val_steps = np.arange(0, stop, VAL_EVERY)
    decay = np.exp(-val_steps / 150.0)
    val_loss = best_loss + 2.0 * decay
    val_loss[-1] = best_loss          # best at the last point
    val_acc = best_acc - 0.8 * decay
    val_acc[-1] = best_acc
    train_acc = val_acc + 0.01
    return train, val_steps, val_loss, val_acc, train_acc


def log_child(client, experiment_id, parent_id, sweep_id, name, overrides, params, preset, result=None,
              status="FINISHED", extra_tags=None):
    tags = {names.PARENT_RUN_ID: parent_id, names.SWEEP_ID: sweep_id, names.OVERRIDES: overrides,
            names.EXPERIMENT: preset, **(extra_tags or {})}
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in {names.NAME_PARAM: preset, **params}.items()])
    if result is not None:
        train, val_steps, val_loss, val_acc, train_acc = result
        ts = int(time.time() * 1000)
        metrics = [Metric(names.TRAIN_LOSS, float(v), ts, int(i)) for i, v in enumerate(train)]
        for s, vl, va, ta in zip(val_steps, val_loss, val_acc, train_acc):
            metrics += [Metric(names.VAL_LOSS, float(vl), ts, int(s)),
                        Metric(names.VAL_ACCURACY, float(va), ts, int(s)),
                        Metric(names.TRAIN_ACCURACY, float(ta), ts, int(s))]
        summary_metrics = {names.NUM_PARAMETERS: params[names.NUM_PARAMETERS],
                           names.BEST_VAL_LOSS: float(val_loss.min()), names.BEST_VAL_ACCURACY: float(val_acc.max()),
                           names.FINAL_VAL_LOSS: float(val_loss[-1]), names.FINAL_VAL_ACCURACY: float(val_acc[-1]),
                           names.EPOCHS: len(train) // 100, names.TRAIN_SECONDS: 12.5}
        metrics += [Metric(k, float(v), ts, 0) for k, v in summary_metrics.items()]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        client.set_tag(run_id, names.STOP_REASON, "max_epochs")
    else:
        client.set_tag(run_id, names.ERROR, "RuntimeError: boom")
    client.set_terminated(run_id, status)
    return run_id


def new_store(root: Path, experiment: str) -> tuple[str, MlflowClient, str]:
    """(uri, client, experiment id) of a fresh sqlite store in `root` holding one experiment."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    return uri, client, client.create_experiment(experiment, artifact_location=(root / "artifacts").as_uri())


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_store")
    uri, client, experiment_id = new_store(root, "report-test")

    # Width sweep: task4a [32] and task3c [64] finish, task4b [128] fails before logging anything.
    parent = client.create_run(experiment_id, run_name="task4_width",
                               tags={names.SWEEP_ID: "sweep-w", names.ROLE: names.ROLE_SWEEP_PARENT}).info.run_id
    children = {
        "a32": log_child(client, experiment_id, parent, "sweep-w", "task4a hidden_sizes=[32]",
                         "experiment=task4a trainer.epochs=3",
                         {"model.hidden_sizes": "[32]", names.SEED_PARAM: 0, names.NUM_PARAMETERS: 25450}, "task4a",
                         curves(0.30, 0.91)),
        "c64": log_child(client, experiment_id, parent, "sweep-w", "task3c hidden_sizes=[64]",
                         "experiment=task3c trainer.epochs=3",
                         {"model.hidden_sizes": "[64]", names.SEED_PARAM: 0, names.NUM_PARAMETERS: 50890}, "task3c",
                         curves(0.25, 0.95, stop=1000)),
        "b128": log_child(client, experiment_id, parent, "sweep-w", "task4b hidden_sizes=[128]",
                          "experiment=task4b trainer.epochs=3",
                          {"model.hidden_sizes": "[128]", names.SEED_PARAM: 0, names.NUM_PARAMETERS: 101770},
                          "task4b", status="FAILED"),
    }
    client.set_terminated(parent, "FAILED")

    # Its relaunch (sweep-w2) reuses the FINISHED [64] run, as sweeper.tracking.resume does (link tag, no new run),
    # and trains [128] again, which finishes this time.
    resumed = client.create_run(experiment_id, run_name="task4_width resumed",
                                tags={names.SWEEP_ID: "sweep-w2", names.ROLE: names.ROLE_SWEEP_PARENT}).info.run_id
    client.set_tag(children["c64"], names.sweep_link_tag("sweep-w2"), resumed)
    resumed_children = {
        "c64": children["c64"],
        "b128": log_child(client, experiment_id, resumed, "sweep-w2", "task4b hidden_sizes=[128]",
                          "experiment=task4b trainer.epochs=3",
                          {"model.hidden_sizes": "[128]", names.SEED_PARAM: 0, names.NUM_PARAMETERS: 101770},
                          "task4b", curves(0.22, 0.96)),
    }
    client.set_terminated(resumed, "FINISHED")

    # Seed sweep: config A carries the seedless config hash tag, config B relies on the params-minus-seed fallback.
    seed_parent = client.create_run(experiment_id, run_name="seeds",
                                    tags={names.SWEEP_ID: "sweep-s", names.ROLE: names.ROLE_SWEEP_PARENT}).info.run_id
    seed_children = {}
    for config, lr, losses in (("A", 0.1, (0.30, 0.40)), ("B", 0.02, (0.20, 0.26))):
        for seed, loss in enumerate(losses):
            seed_children[(config, seed)] = log_child(
                client, experiment_id, seed_parent, "sweep-s", f"lr={lr} seed={seed}",
                f"optimizer.lr={lr} trainer.seed={seed}",
                {"optimizer.lr": lr, names.SEED_PARAM: seed, names.NUM_PARAMETERS: 50890}, "task2c",
                curves(loss, 0.9 + seed / 100, stop=NUM_STEPS - 200 * seed),
                extra_tags={names.CONFIG_HASH_NOSEED: "hash-A"} if config == "A" else None)
    client.set_terminated(seed_parent, "FINISHED")
    return {"uri": uri, "client": client, "root": root, "experiment_id": experiment_id, "parent": parent,
            "children": children, "resumed": resumed, "resumed_children": resumed_children,
            "seed_parent": seed_parent, "seed_children": seed_children}


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_parse_overrides_reads_the_space_joined_tag():
    assert parse_overrides("experiment=task3c model.hidden_sizes=[32,64] trainer.seed=1") == {
        "experiment": "task3c", "model.hidden_sizes": "[32,64]", names.SEED_PARAM: "1"}
    # a sweep parent's tag holds the swept values whole; brackets and quotes may hold spaces
    assert parse_overrides("data=digits model.width=16,32 model.hidden_sizes=[64, 64] name='a b'") == {
        "data": "digits", "model.width": "16,32", "model.hidden_sizes": "[64, 64]", "name": "'a b'"}
    assert parse_overrides("+trainer.extra=1 ++optimizer.lr=0.1 ~model.bias tracking.uri=sqlite\\:////t/m.db") == {
        "trainer.extra": "1", "optimizer.lr": "0.1", "tracking.uri": "sqlite\\:////t/m.db"}
    assert parse_overrides("") == {} and parse_overrides(None) == {}


def test_preset_name_is_the_experiment_tag_the_app_writes():
    def run(tags, params=None):
        return SimpleNamespace(data=SimpleNamespace(tags=tags, params=params or {}))

    assert preset_name(run({names.EXPERIMENT: "task3c", "experiment_preset": "task1"})) == "task3c"
    assert preset_name(run({names.EXPERIMENT: "default"}, {names.NAME_PARAM: "default"})) is None  # config default
    assert preset_name(run({}, {names.NAME_PARAM: "task3c"})) is None  # not a run the app wrote


def test_load_history_reads_curves_aligned_on_steps(store):
    client = store["client"]
    history = load_history(client, store["children"]["c64"])
    train, val_steps, val_loss, val_acc, train_acc = curves(0.25, 0.95, stop=1000)
    np.testing.assert_allclose(history.train_loss, train)
    np.testing.assert_array_equal(history.val_steps, val_steps)
    np.testing.assert_allclose(history.val_loss, val_loss)
    np.testing.assert_allclose(history.val_accuracy, val_acc)
    np.testing.assert_allclose(history.train_accuracy, train_acc)
    assert load_history(client, store["children"]["b128"]).is_empty


def test_history_from_metrics_fills_gaps_and_keeps_latest_value():
    M = mlflow.entities.Metric
    train, val, acc = names.TRAIN_LOSS, names.VAL_LOSS, names.VAL_ACCURACY
    h = history_from_metrics({
        train: [M(train, 1.0, 1, 0), M(train, 3.0, 1, 2), M(train, 9.0, 5, 2), M(train, 7.0, 4, 2)],
        val: [M(val, 0.5, 1, 0), M(val, 0.4, 1, 2)],
        acc: [M(acc, 0.8, 1, 2)],
    })
    np.testing.assert_allclose(h.train_loss, [1.0, np.nan, 9.0])
    np.testing.assert_array_equal(h.val_steps, [0, 2])
    np.testing.assert_allclose(h.val_accuracy, [np.nan, 0.8])
    assert np.isnan(h.train_accuracy).all()


def test_finalize_sweep_attaches_artifacts_and_best_child(store, tmp_path):
    client, parent, children = store["client"], store["parent"], store["children"]
    result = finalize_sweep(client, parent, tmp_path / "final")
    assert result.best.run_id == children["c64"]
    assert result.keys == ["experiment"]  # trainer.epochs=3 is common to all children, hence not a swept value

    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"comparison.png", "summary.csv", "summary.md"} <= artifacts
    downloaded = Path(client.download_artifacts(parent, "summary.csv", str(tmp_path / "dl")))
    rows = {r["run_id"]: r for r in read_csv(downloaded)}
    assert len(rows) == 3
    a32, c64, b128 = rows[children["a32"]], rows[children["c64"]], rows[children["b128"]]
    assert a32["experiment"] == "task4a" and a32["run_name"] == "task4a hidden_sizes=[32]"
    assert float(a32["best_val_loss"]) == pytest.approx(0.30)
    assert float(c64["best_val_loss"]) == pytest.approx(0.25)
    assert float(c64["best_val_accuracy"]) == pytest.approx(0.95)
    assert float(c64["final_val_accuracy"]) == pytest.approx(0.95)
    assert int(c64[names.NUM_PARAMETERS]) == 50890 and int(c64[names.EPOCHS]) == 10
    assert c64[names.STOP_REASON] == "max_epochs" and float(c64["seconds"]) == pytest.approx(12.5)
    assert b128["status"] == "FAILED" and b128["best_val_loss"] == "" and b128[names.NUM_PARAMETERS] == "101770"

    md = Path(client.download_artifacts(parent, "summary.md", str(tmp_path / "dl"))).read_text()
    assert md.count("\n| task") == 3 and "**task3c hidden_sizes=[64]**" in md
    png = Path(client.download_artifacts(parent, "comparison.png", str(tmp_path / "dl")))
    assert png.read_bytes()[:4] == b"\x89PNG"

    tags = client.get_run(parent).data.tags
    assert tags[names.BEST_CHILD_RUN_ID] == children["c64"]
    assert tags[names.BEST_CHILD_NAME] == "task3c hidden_sizes=[64]"
    assert float(tags[names.BEST_VAL_LOSS]) == pytest.approx(0.25)
    assert float(tags[names.BEST_VAL_ACCURACY]) == pytest.approx(0.95)
    assert tags[names.SWEEP_CHILDREN] == "3" and tags[names.SWEEP_CHILDREN_FINISHED] == "2"
    assert tags[names.SWEEP_CHILDREN_REUSED] == "0"


def test_a_resumed_sweep_is_reported_with_the_runs_its_summary_lists(store, tmp_path):
    """The sweep's own summary, --parent-run-id and --sweep-id cover the same runs, the reused one included."""
    client, resumed = store["client"], store["resumed"]
    expected = [store["resumed_children"]["c64"], store["resumed_children"]["b128"]]  # oldest first
    result = finalize_sweep(client, resumed, tmp_path / "final")
    assert [r.run_id for r in result.rows] == expected
    tags = client.get_run(resumed).data.tags
    assert (tags[names.SWEEP_CHILDREN], tags[names.SWEEP_CHILDREN_REUSED]) == ("2", "1")
    assert tags[names.BEST_CHILD_RUN_ID] == store["resumed_children"]["b128"]  # 0.22 beats the reused 0.25
    for selection in (["--parent-run-id", resumed], ["--sweep-id", "sweep-w2"]):
        out = tmp_path / selection[0].strip("-")
        assert cli.main([*selection, "--tracking-uri", store["uri"], "--out", str(out)]) == 0
        assert [r["run_id"] for r in read_csv(out / "summary.csv")] == expected, selection
    assert [r.info.run_id for r in select_runs(client, sweep_id="sweep-w2")[0]] == expected


def test_seed_groups_mean_and_std(store, tmp_path):
    client = store["client"]
    runs, _ = select_runs(client, parent_run_id=store["seed_parent"])
    keys, rows = summary_rows(runs)
    assert keys == ["optimizer.lr", names.SEED_PARAM]
    groups = group_rows(rows, keys)
    assert [g.label for g in groups] == ["lr=0.1", "lr=0.02"]
    assert [len(g.rows) for g in groups] == [2, 2]
    mean, std, n = mean_std(r.best_val_loss for r in groups[0].rows)
    assert (mean, n) == (pytest.approx(0.35), 2) and std == pytest.approx(math.sqrt(0.005))
    result = finalize_sweep(client, store["seed_parent"], tmp_path)
    assert result.best.run_name == "lr=0.02 seed=0"
    md = (tmp_path / "summary.md").read_text()
    assert "Mean ± std over seeds" in md
    assert "| lr=0.1 | 2 |" in md and "0.3500 ± 0.0707" in md and "0.2300 ± 0.0424" in md


def test_a_summary_row_is_typed_and_reads_each_summary_metric_by_its_name_in_names(store):
    client, c64 = store["client"], store["children"]["c64"]
    run = client.get_run(c64)
    row = summary_row(run, ["experiment"])
    assert isinstance(row, SummaryRow) and row.swept == {"experiment": "task3c"}
    for name, column in METRIC_FIELDS.items():
        assert row.column(column) == pytest.approx(run.data.metrics[name]), name
    assert (row.run_id, row.status, row.stop_reason, row.seed) == (c64, "FINISHED", "max_epochs", "0")
    assert set(SUMMARY_FIELDS) <= {f.name for f in dataclasses.fields(SummaryRow)}


def test_best_row_ignores_failed_and_non_finite():
    rows = [SummaryRow("a", "a", "FAILED", "g", best_val_loss=0.1),
            SummaryRow("b", "b", "FINISHED", "g", best_val_loss=float("nan")),
            SummaryRow("x", "x", "FINISHED", "g", best_val_loss=0.5), SummaryRow("c", "c", "FINISHED", "g")]
    assert best_row(rows).run_id == "x"
    assert best_row(rows[:2]) is None


def run_report(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sweeper.reporting.cli", *args], capture_output=True, text=True,
                          timeout=HANG, cwd=REPO, env={**os.environ, **(env or {})})


def test_report_cli_regenerates_files_from_parent_run(store, tmp_path):
    out = tmp_path / "report"
    artifacts_before = {a.path for a in store["client"].list_artifacts(store["parent"])}
    proc = run_report("--parent-run-id", store["parent"], "--tracking-uri", store["uri"], "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for name in ("comparison.png", "summary.csv", "summary.md", "report.md", "task4_width.png"):
        assert (out / name).is_file(), name
    assert not (out / "task3_tricks.png").exists()  # only task3c of the tricks has runs
    assert not (out / "task2c_curves.png").exists()
    assert sorted(p.name for p in (out / "curves").glob("*.png")) == ["task3c_hidden_sizes=_64.png",
                                                                      "task4a_hidden_sizes=_32.png"]
    rows = read_csv(out / "summary.csv")
    assert len(rows) == 3
    assert {r["run_name"]: r["best_val_loss"] for r in rows}["task3c hidden_sizes=[64]"] == "0.25"
    assert "task4_width.png" in (out / "report.md").read_text()
    # Without --attach the report is read-only: the parent's artifacts are unchanged.
    assert {a.path for a in store["client"].list_artifacts(store["parent"])} == artifacts_before


def test_report_by_sweep_id_and_experiment_filter_in_process(store, tmp_path, capsys):
    assert cli.main(["--sweep-id", "sweep-s", "--tracking-uri", store["uri"], "--out", str(tmp_path / "s")]) == 0
    rows = read_csv(tmp_path / "s" / "summary.csv")
    assert len(rows) == 4  # the parent (role tag: sweep parent) is not a row
    assert (tmp_path / "s" / "task2c_curves.png").is_file()  # the presets of the seed sweep are task2c
    code = cli.main(["--experiment", "report-test", "--filter", "params.optimizer.lr = '0.02'",
                        "--tracking-uri", store["uri"], "--out", str(tmp_path / "e")])
    assert code == 0
    assert sorted(r["run_name"] for r in read_csv(tmp_path / "e" / "summary.csv")) == ["lr=0.02 seed=0",
                                                                                     "lr=0.02 seed=1"]


def test_report_errors(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    assert cli.main(["--sweep-id", "nope", "--tracking-uri", store["uri"], "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "no runs matched" in err and "sweep_id='nope'" in err
    assert cli.main(["--experiment", "missing", "--tracking-uri", store["uri"]]) == 1
    assert "report-test" in capsys.readouterr().err  # lists the experiments that exist

    with pytest.raises(ValueError, match="exactly one"):
        select_runs(store["client"], sweep_id="sweep-s", experiment="report-test")

    missing_db = tmp_path / "none" / "mlflow.db"
    assert cli.main(["--sweep-id", "x", "--tracking-uri", f"sqlite:///{missing_db}"]) == 2
    assert "does not exist" in capsys.readouterr().err and not missing_db.exists()

    assert cli.main(["--sweep-id", "x", "--tracking-uri", "http://alice:s3cret@127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach" in err and "s3cret" not in err and "***@127.0.0.1:9" in err


def test_report_reads_the_store_the_app_writes_by_default(store, tmp_path, monkeypatch, capsys):
    from sweeper.tracking.store import default_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLP_SWEEPS_OUTPUTS", raising=False)
    assert default_tracking_uri() == f"sqlite:///{REPO / 'outputs' / 'mlflow.db'}"
    monkeypatch.setenv("MLP_SWEEPS_OUTPUTS", str(tmp_path))  # the same store the app writes to
    assert cli.main(["--sweep-id", "sweep-s"]) == 2
    assert f"sqlite:///{tmp_path / 'mlflow.db'}" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    assert cli.main(["--sweep-id", "sweep-s"]) == 0
    assert len(read_csv(tmp_path / "reports" / "sweep-s" / "summary.csv")) == 4  # default --out: <outputs>/reports


def test_the_cli_answers_help_without_loading_mlflow_or_matplotlib():
    code = ("import sys, sweeper.reporting.cli as cli\n"
            "assert cli.build_parser().format_help().startswith('usage: mlp-sweep-report')\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'matplotlib', 'hydra'}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_runhistory_from_empty_run_is_plottable(tmp_path):
    from sweeper.reporting.plots import plot_curves

    assert plot_curves(RunHistory(), tmp_path / "e.png").is_file()
