"""Summary, finalize_sweep and mlp-sweep-report against a real temporary sqlite MLflow store.

The store is created once for the module (migrations take ~7 s) and filled with fake sweeps that follow the naming
contract: a width sweep (parent + 3 children, one FAILED with no metrics) and a seed sweep (2 configs x 2 seeds).
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

mlflow = pytest.importorskip("mlflow")
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from sweeper import report, summary  # noqa: E402
from sweeper.plots import RunHistory  # noqa: E402

from ..handshake import HANG  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
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
    tags = {"mlflow.parentRunId": parent_id, "sweep_id": sweep_id, "hydra.overrides": overrides,
            "experiment": preset, **(extra_tags or {})}
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in {"name": preset, **params}.items()])
    if result is not None:
        train, val_steps, val_loss, val_acc, train_acc = result
        ts = int(time.time() * 1000)
        metrics = [Metric("train/loss", float(v), ts, int(i)) for i, v in enumerate(train)]
        for s, vl, va, ta in zip(val_steps, val_loss, val_acc, train_acc):
            metrics += [Metric("val/loss", float(vl), ts, int(s)), Metric("val/accuracy", float(va), ts, int(s)),
                        Metric("train/accuracy", float(ta), ts, int(s))]
        summary_metrics = {"num_parameters": params["num_parameters"], "best/val_loss": float(val_loss.min()),
                           "best/val_accuracy": float(val_acc.max()), "final/val_loss": float(val_loss[-1]),
                           "final/val_accuracy": float(val_acc[-1]), "epochs": len(train) // 100,
                           "train_seconds": 12.5}
        metrics += [Metric(k, float(v), ts, 0) for k, v in summary_metrics.items()]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        client.set_tag(run_id, "stop_reason", "max_epochs")
    else:
        client.set_tag(run_id, "error", "RuntimeError: boom")
    client.set_terminated(run_id, status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("report-test", artifact_location=(root / "artifacts").as_uri())

    # Width sweep: task4a [32] and task3c [64] finish, task4b [128] fails before logging anything.
    parent = client.create_run(experiment_id, run_name="task4_width",
                               tags={"sweep_id": "sweep-w", "mlp_sweeps.role": "sweep_parent"}).info.run_id
    children = {
        "a32": log_child(client, experiment_id, parent, "sweep-w", "task4a hidden_sizes=[32]",
                         "experiment=task4a trainer.epochs=3",
                         {"model.hidden_sizes": "[32]", "trainer.seed": 0, "num_parameters": 25450}, "task4a",
                         curves(0.30, 0.91)),
        "c64": log_child(client, experiment_id, parent, "sweep-w", "task3c hidden_sizes=[64]",
                         "experiment=task3c trainer.epochs=3",
                         {"model.hidden_sizes": "[64]", "trainer.seed": 0, "num_parameters": 50890}, "task3c",
                         curves(0.25, 0.95, stop=1000)),
        "b128": log_child(client, experiment_id, parent, "sweep-w", "task4b hidden_sizes=[128]",
                          "experiment=task4b trainer.epochs=3",
                          {"model.hidden_sizes": "[128]", "trainer.seed": 0, "num_parameters": 101770}, "task4b",
                          status="FAILED"),
    }
    client.set_terminated(parent, "FAILED")

    # Seed sweep: config A carries config_hash_noseed tags, config B relies on the params-minus-seed fallback.
    seed_parent = client.create_run(experiment_id, run_name="seeds",
                                    tags={"sweep_id": "sweep-s", "mlp_sweeps.role": "sweep_parent"}).info.run_id
    seed_children = {}
    for config, lr, losses in (("A", 0.1, (0.30, 0.40)), ("B", 0.02, (0.20, 0.26))):
        for seed, loss in enumerate(losses):
            seed_children[(config, seed)] = log_child(
                client, experiment_id, seed_parent, "sweep-s", f"lr={lr} seed={seed}",
                f"optimizer.lr={lr} trainer.seed={seed}",
                {"optimizer.lr": lr, "trainer.seed": seed, "num_parameters": 50890}, "task2c",
                curves(loss, 0.9 + seed / 100, stop=NUM_STEPS - 200 * seed),
                extra_tags={"config_hash_noseed": "hash-A"} if config == "A" else None)
    client.set_terminated(seed_parent, "FINISHED")
    return {"uri": uri, "client": client, "root": root, "experiment_id": experiment_id, "parent": parent,
            "children": children, "seed_parent": seed_parent, "seed_children": seed_children}


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_parse_overrides_formats():
    expected = {"experiment": "task3c", "model.hidden_sizes": "[32,64]", "trainer.seed": "1"}
    assert summary.parse_overrides("experiment=task3c model.hidden_sizes=[32,64] trainer.seed=1") == expected
    assert summary.parse_overrides('["experiment=task3c", "model.hidden_sizes=[32,64]", "+trainer.seed=1"]') \
        == expected
    assert summary.parse_overrides("experiment=task3c,model.hidden_sizes=[32,64],++trainer.seed=1 ~foo") == expected
    assert summary.parse_overrides("name='a b' x=1") == {"name": "'a b'", "x": "1"}
    assert summary.parse_overrides("") == {} and summary.parse_overrides(None) == {}


def test_load_history_reads_curves_aligned_on_steps(store):
    client = store["client"]
    history = summary.load_history(client, store["children"]["c64"])
    train, val_steps, val_loss, val_acc, train_acc = curves(0.25, 0.95, stop=1000)
    np.testing.assert_allclose(history.train_loss, train)
    np.testing.assert_array_equal(history.val_steps, val_steps)
    np.testing.assert_allclose(history.val_loss, val_loss)
    np.testing.assert_allclose(history.val_accuracy, val_acc)
    np.testing.assert_allclose(history.train_accuracy, train_acc)
    assert summary.load_history(client, store["children"]["b128"]).is_empty


def test_history_from_metrics_fills_gaps_and_keeps_latest_value():
    M = mlflow.entities.Metric
    h = summary.history_from_metrics({
        "train/loss": [M("train/loss", 1.0, 1, 0), M("train/loss", 3.0, 1, 2), M("train/loss", 9.0, 5, 2),
                       M("train/loss", 7.0, 4, 2)],
        "val/loss": [M("val/loss", 0.5, 1, 0), M("val/loss", 0.4, 1, 2)],
        "val/accuracy": [M("val/accuracy", 0.8, 1, 2)],
    })
    np.testing.assert_allclose(h.train_loss, [1.0, np.nan, 9.0])
    np.testing.assert_array_equal(h.val_steps, [0, 2])
    np.testing.assert_allclose(h.val_accuracy, [np.nan, 0.8])
    assert np.isnan(h.train_accuracy).all()


def test_finalize_sweep_attaches_artifacts_and_best_child(store, tmp_path):
    client, parent, children = store["client"], store["parent"], store["children"]
    result = summary.finalize_sweep(client, parent, tmp_path / "final")
    assert result.best["run_id"] == children["c64"]
    assert result.keys == ["experiment"]  # trainer.epochs=3 is common to all children, hence not a swept value

    names = {a.path for a in client.list_artifacts(parent)}
    assert {"comparison.png", "summary.csv", "summary.md"} <= names
    downloaded = Path(client.download_artifacts(parent, "summary.csv", str(tmp_path / "dl")))
    rows = {r["run_id"]: r for r in read_csv(downloaded)}
    assert len(rows) == 3
    a32, c64, b128 = rows[children["a32"]], rows[children["c64"]], rows[children["b128"]]
    assert a32["experiment"] == "task4a" and a32["run_name"] == "task4a hidden_sizes=[32]"
    assert float(a32["best_val_loss"]) == pytest.approx(0.30)
    assert float(c64["best_val_loss"]) == pytest.approx(0.25)
    assert float(c64["best_val_accuracy"]) == pytest.approx(0.95)
    assert float(c64["final_val_accuracy"]) == pytest.approx(0.95)
    assert int(c64["num_parameters"]) == 50890 and int(c64["epochs"]) == 10
    assert c64["stop_reason"] == "max_epochs" and float(c64["seconds"]) == pytest.approx(12.5)
    assert b128["status"] == "FAILED" and b128["best_val_loss"] == "" and b128["num_parameters"] == "101770"

    md = Path(client.download_artifacts(parent, "summary.md", str(tmp_path / "dl"))).read_text()
    assert md.count("\n| task") == 3 and "**task3c hidden_sizes=[64]**" in md
    png = Path(client.download_artifacts(parent, "comparison.png", str(tmp_path / "dl")))
    assert png.read_bytes()[:4] == b"\x89PNG"

    tags = client.get_run(parent).data.tags
    assert tags["best_child_run_id"] == children["c64"]
    assert tags["best_child_name"] == "task3c hidden_sizes=[64]"
    assert float(tags["best/val_loss"]) == pytest.approx(0.25)
    assert float(tags["best/val_accuracy"]) == pytest.approx(0.95)
    assert tags["sweep_children"] == "3" and tags["sweep_children_finished"] == "2"


def test_seed_groups_mean_and_std(store, tmp_path):
    client = store["client"]
    runs = summary.child_runs(client, store["seed_parent"])
    keys, rows = summary.summary_rows(runs)
    assert keys == ["optimizer.lr", "trainer.seed"]
    groups = summary.group_rows(rows, keys)
    assert [g.label for g in groups] == ["lr=0.1", "lr=0.02"]
    assert [len(g.rows) for g in groups] == [2, 2]
    mean, std, n = summary.mean_std(r["best_val_loss"] for r in groups[0].rows)
    assert (mean, n) == (pytest.approx(0.35), 2) and std == pytest.approx(math.sqrt(0.005))
    result = summary.finalize_sweep(client, store["seed_parent"], tmp_path)
    assert result.best["run_name"] == "lr=0.02 seed=0"
    md = (tmp_path / "summary.md").read_text()
    assert "Mean ± std over seeds" in md
    assert "| lr=0.1 | 2 |" in md and "0.3500 ± 0.0707" in md and "0.2300 ± 0.0424" in md


def test_best_row_ignores_failed_and_non_finite():
    rows = [{"status": "FAILED", "best_val_loss": 0.1}, {"status": "FINISHED", "best_val_loss": float("nan")},
            {"status": "FINISHED", "best_val_loss": 0.5, "id": "x"}, {"status": "FINISHED", "best_val_loss": None}]
    assert summary.best_row(rows)["id"] == "x"
    assert summary.best_row(rows[:2]) is None


def run_report(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sweeper.report", *args], capture_output=True, text=True,
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
    assert report.main(["--sweep-id", "sweep-s", "--tracking-uri", store["uri"], "--out", str(tmp_path / "s")]) == 0
    rows = read_csv(tmp_path / "s" / "summary.csv")
    assert len(rows) == 4  # the parent (mlp_sweeps.role=sweep_parent) is not a row
    assert (tmp_path / "s" / "task2c_curves.png").is_file()  # the presets of the seed sweep are task2c
    code = report.main(["--experiment", "report-test", "--filter", "params.optimizer.lr = '0.02'",
                        "--tracking-uri", store["uri"], "--out", str(tmp_path / "e")])
    assert code == 0
    assert sorted(r["run_name"] for r in read_csv(tmp_path / "e" / "summary.csv")) == ["lr=0.02 seed=0",
                                                                                     "lr=0.02 seed=1"]


def test_report_errors(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    assert report.main(["--sweep-id", "nope", "--tracking-uri", store["uri"], "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "no runs matched" in err and "sweep_id='nope'" in err
    assert report.main(["--experiment", "missing", "--tracking-uri", store["uri"]]) == 1
    assert "report-test" in capsys.readouterr().err  # lists the experiments that exist

    missing_db = tmp_path / "none" / "mlflow.db"
    assert report.main(["--sweep-id", "x", "--tracking-uri", f"sqlite:///{missing_db}"]) == 2
    assert "does not exist" in capsys.readouterr().err and not missing_db.exists()

    assert report.main(["--sweep-id", "x", "--tracking-uri", "http://alice:s3cret@127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach" in err and "s3cret" not in err and "***@127.0.0.1:9" in err


def test_default_tracking_uri_points_into_the_repo(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLP_SWEEPS_OUTPUTS", raising=False)
    assert report.default_tracking_uri() == f"sqlite:///{REPO / 'outputs' / 'mlflow.db'}"
    monkeypatch.setenv("MLP_SWEEPS_OUTPUTS", str(tmp_path))  # the same store the app writes to
    assert report.default_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example:5000")
    assert report.default_tracking_uri() == "http://example:5000"
    assert report.mask_credentials("postgresql://u:pw@db/x?token=abc") == "postgresql://***@db/x?token=***"


def test_runhistory_from_empty_run_is_plottable(tmp_path):
    from sweeper.plots import plot_curves

    assert plot_curves(RunHistory(), tmp_path / "e.png").is_file()
