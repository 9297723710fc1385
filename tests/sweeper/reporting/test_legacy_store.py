"""A store written by release 0.1.0 is still reported correctly.

tests/fixtures/store_v0.1.0.db.gz was made by the 0.1.0 app, experiment `mlp-sweeps`:
sweep 1 `data=digits trainer.epochs=1 model.width=16,32` (2 children), sweep 2 `model.width=32,48` that REUSED the
width-32 run of sweep 1 (link tag) and trained width 48, and one single run `optimizer=momentum`.
"""
from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import pytest

from sweeper import names

pytestmark = pytest.mark.integration
pytest.importorskip("mlflow")

from sweeper.reporting import cli  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "store_v0.1.0.db.gz"
SWEEP_2_ID = "16-05-52-116534-8e26a750"
SWEEP_2_PARENT = "1f257411df1f44598b5aec2e4f4f457b"
# summary metrics of the children as the 0.1.0 app logged them
BEST_VAL_LOSS = {"16": 1.938954329945089, "32": 1.8530146879713578, "48": 1.8717312108447004}
MOMENTUM_BEST_VAL_LOSS = 1.0304368229002723
SWEEP_2_CHILDREN = {"32": "ec03d8dc20704109a4ee203789c04e7b", "48": "3bab347efc154d4ca5029b1355f77ade"}


@pytest.fixture(scope="module")
def legacy_uri(tmp_path_factory) -> str:
    db = tmp_path_factory.mktemp("legacy") / "mlflow.db"
    with gzip.open(FIXTURE) as packed, db.open("wb") as out:
        shutil.copyfileobj(packed, out)
    return f"sqlite:///{db}"


def report_rows(legacy_uri: str, out: Path, *selection: str) -> list[dict[str, str]]:
    assert cli.main([*selection, "--tracking-uri", legacy_uri, "--out", str(out)]) == 0
    with (out / "summary.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("selection", [("--sweep-id", SWEEP_2_ID), ("--parent-run-id", SWEEP_2_PARENT)],
                         ids=["sweep-id", "parent-run-id"])
def test_resumed_sweep_reports_its_reused_and_its_trained_run(legacy_uri, tmp_path, selection):
    rows = report_rows(legacy_uri, tmp_path / "report", *selection)
    assert sorted(r["model.width"] for r in rows) == ["32", "48"]
    for row in rows:
        width = row["model.width"]
        assert row["run_id"] == SWEEP_2_CHILDREN[width]
        assert float(row["best_val_loss"]) == BEST_VAL_LOSS[width]
        assert row["status"] == "FINISHED" and row[names.STOP_REASON] == "max_epochs"
    report = (tmp_path / "report" / "report.md").read_text()
    assert "(2 runs)" in report


def test_experiment_reports_every_child_and_the_single_run_without_parents(legacy_uri, tmp_path):
    rows = report_rows(legacy_uri, tmp_path / "report", "--experiment", "mlp-sweeps")
    # widths 16 and 32 (sweep 1), 48 (sweep 2, whose width 32 is the same run as sweep 1's), the single run
    assert len(rows) == 4
    by_width = {r["model.width"]: r for r in rows if r["optimizer"] != "momentum"}
    assert sorted(by_width) == ["16", "32", "48"]
    for width, row in by_width.items():
        assert float(row["best_val_loss"]) == BEST_VAL_LOSS[width]
    (single,) = [r for r in rows if r["optimizer"] == "momentum"]
    # its command line did not set the width: the table shows the width it logged as a param
    assert float(single["best_val_loss"]) == MOMENTUM_BEST_VAL_LOSS and single["model.width"] == "64"
    assert not any(r["run_name"].startswith("sweep ") for r in rows)


def test_legacy_curves_are_read_back(legacy_uri, tmp_path):
    """The per-step train loss and the validation points of a 0.1.0 run come back through the bulk reader."""
    from sweeper.reporting.history import load_history
    from sweeper.tracking.store import connect

    client = connect(legacy_uri)
    run = client.get_run(SWEEP_2_CHILDREN["48"])
    history = load_history(client, run)
    assert history.train_loss.size == int(run.data.metrics[names.STEPS])
    assert history.train_loss[-1] == pytest.approx(run.data.metrics[names.TRAIN_LOSS])
    assert history.val_loss.min() == pytest.approx(run.data.metrics[names.BEST_VAL_LOSS])
    assert history.val_accuracy[-1] == pytest.approx(run.data.metrics[names.FINAL_VAL_ACCURACY])


@pytest.mark.parametrize("bad", ["filter", "out-is-a-file", "out-under-a-file"])
def test_bad_report_arguments_are_one_line_and_exit_2(legacy_uri, tmp_path, capsys, bad):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    args = {"filter": ["--filter", "params.lr = = 'x'", "--out", str(tmp_path / "out")],
            "out-is-a-file": ["--out", str(a_file)],
            "out-under-a-file": ["--out", str(a_file / "report")]}[bad]
    assert cli.main(["--tracking-uri", legacy_uri, "--experiment", "mlp-sweeps", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlp-sweep-report: error: ") and err.count("\n") == 1, err
    assert {"filter": "is not a valid MLflow filter", "out-is-a-file": "is a file, not a directory",
            "out-under-a-file": "is not a directory"}[bad] in err
    assert a_file.read_text() == "not a directory" and not (tmp_path / "out").exists()
