"""A comparison a researcher can read and trust (real temporary sqlite store, fake curves): 19 task3c configs whose
first three differing params (alphabetically) collide, a run and its rerun of one seed, a 17-digit learning rate, a
grid whose jobs started out of order, and `make clean-outputs` against where the report writes."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.integration

mlflow = pytest.importorskip("mlflow")

from sweeper import names  # noqa: E402
from sweeper.reporting import cli  # noqa: E402
from sweeper.reporting.console import summary_lines  # noqa: E402
from sweeper.reporting.finalize import finalize_sweep  # noqa: E402
from sweeper.reporting.history import load_history  # noqa: E402
from sweeper.reporting.plots import MAX_COLOURED, comparison_figure  # noqa: E402
from sweeper.reporting.report import course_figure_groups  # noqa: E402
from sweeper.reporting.selection import select_runs  # noqa: E402

from ...handshake import HANG  # noqa: E402
from .test_report import REPO, VAL_EVERY, curves, log_child, new_store  # noqa: E402

LONG_LR = 0.05873669160363899  # what an Optuna search logs
GRID = ((2, "0.1"), (0, "0.01"), (1, repr(LONG_LR)))  # (job number, lr) in the order the jobs started


def task3c_params(lr, momentum, batch_size, epochs):
    return {"optimizer.lr": lr, "optimizer.momentum": momentum, "trainer.batch_size": batch_size,
            "trainer.epochs": epochs, names.SEED_PARAM: 0, names.NUM_PARAMETERS: 50890}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust_store")
    uri, client, exp = new_store(root, "trust")
    # task2c and its rerun: the same config and the same seed 0
    for _ in range(2):
        log_child(client, exp, "none", "none", "task2c", "experiment=task2c", task3c_params(0.1, 0.0, 32, 17),
                  "task2c", curves(0.4, 0.9, stop=300), extra_tags={names.CONFIG_HASH_NOSEED: "h-task2c"})
    # 18 task3c configs of 17 epochs, and one of 50 epochs with the settings of the first
    configs = [(lr, m, bs, 17) for lr in (0.01, 0.02, LONG_LR) for m in (0.5, 0.9, 0.99) for bs in (32, 64)]
    configs.append((0.01, 0.5, 32, 50))
    for i, (lr, m, bs, epochs) in enumerate(configs):
        overrides = (f"experiment=task3c optimizer.lr={lr} optimizer.momentum={m} trainer.batch_size={bs} "
                     f"trainer.epochs={epochs}")
        log_child(client, exp, "none", "none", f"task3c {i}", overrides, task3c_params(lr, m, bs, epochs), "task3c",
                  curves(0.1 + i / 100, 0.95, stop=500 if epochs == 50 else 300),
                  extra_tags={names.CONFIG_HASH_NOSEED: f"h-task3c-{i}"})
    # a grid of three learning rates whose jobs started in the order 2, 0, 1
    grid = client.create_run(exp, run_name="lr grid", tags={names.SWEEP_ID: "s-grid",
                                                            names.ROLE: names.ROLE_SWEEP_PARENT}).info.run_id
    for job, lr in GRID:
        log_child(client, exp, grid, "s-grid", f"lr_grid lr={lr}", f"optimizer.lr={lr}",
                  task3c_params(float(lr), 0.9, 32, 3), "lr_grid", curves(0.2, 0.95, stop=300),
                  extra_tags={names.CONFIG_HASH_NOSEED: f"h-grid-{job}", names.OUTPUT_DIR: f"{root}/grid/{job}"})
    client.set_terminated(grid, "FINISHED")
    runs, _ = select_runs(client, experiment="trust")
    return {"uri": uri, "client": client, "grid": grid, "runs": runs,
            "histories": {r.info.run_id: load_history(client, r) for r in runs}}


def tricks_groups(store):
    (figure,) = [f for f in course_figure_groups(store["runs"], store["histories"]) if f[0] == "task3_tricks"]
    return figure[2]


def test_every_task3c_config_is_a_curve_of_its_own_with_a_label_of_its_own(store):
    """Labelled by the first three differing params in alphabetical order (lr, momentum, batch_size), the 50-epoch
    config got the label of a 17-epoch one and overwrote its curve."""
    groups = tricks_groups(store)
    task3c = [label for label in groups if label.startswith("task3c")]
    assert len(task3c) == 19 and len(groups) == 20
    (fifty,) = [label for label in task3c if "epochs=50" in label]
    # the keys with the most values first (3 learning rates, 3 momenta), then those that still separate configs
    assert fifty.startswith("task3c + momentum, ")
    parts = fifty.removeprefix("task3c + momentum, ").split()
    assert sorted(parts[:2]) == ["lr=0.01", "momentum=0.5"] and sorted(parts[2:]) == ["batch_size=32", "epochs=50"]
    fig = comparison_figure(groups, title="tricks")
    ax_loss, ax_acc = fig.axes
    by_label = {line.get_label().lstrip("_").split(" (mean ± std")[0]: line for line in ax_acc.lines}
    assert sorted(by_label) == sorted(groups)
    # the 50-epoch curve is drawn to its own last validation point, the 17-epoch ones to theirs
    assert by_label[fifty].get_xdata()[-1] == 500 - VAL_EVERY
    assert {by_label[label].get_xdata()[-1] for label in task3c if label != fifty} == {300 - VAL_EVERY}
    # 20 curves: the best 8 are named below the panels, the rest are grey
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == MAX_COLOURED + 1 and texts[-1] == "12 other configs (grey)"
    assert not any(re.search(r"\d\.\d{6,}", label) for label in [*groups, *texts])
    assert any("lr=0.05874" in label for label in groups)


def test_a_rerun_of_the_same_seed_counts_once(store, tmp_path):
    groups = tricks_groups(store)
    assert len(groups["task2c baseline"]) == 1  # two runs, one seed: nothing to average
    (ax_loss, ax_acc) = comparison_figure({"task2c": groups["task2c baseline"]}).axes
    assert [t.get_text() for t in ax_acc.get_legend().get_texts()] == ["task2c"]
    out = tmp_path / "report"
    assert cli.main(["--experiment", "trust", "--tracking-uri", store["uri"], "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    # no seed table: no config of this experiment ran with two seeds
    assert "Mean ± std over seeds" not in text and "over 2 seeds" not in text


def test_tables_and_the_end_of_sweep_lines_show_four_significant_digits_in_grid_order(store, tmp_path):
    summary = finalize_sweep(store["client"], store["grid"], tmp_path)
    # grid order (jobs 0, 1, 2), not the order the jobs started in (2, 0, 1)
    assert [row.swept["optimizer.lr"] for row in summary.rows] == ["0.01", repr(LONG_LR), "0.1"]
    lines = summary_lines(summary, "sweep lr grid")
    assert [line.split()[0] for line in lines[3:6]] == ["0.01", "0.05874", "0.1"]
    assert lines[3].split()[2:4] == ["0.9500", "0.2000"]
    md = (tmp_path / "summary.md").read_text()
    assert [line.split("|")[2].strip() for line in md.splitlines() if line.startswith("| lr_grid")] == [
        "0.01", "0.05874", "0.1"]
    # the run name stays whole: it is what the MLflow UI finds the run by
    assert f"| lr_grid lr={LONG_LR!r} | 0.05874 |" in md


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_clean_outputs_removes_the_reports_the_report_command_writes(store, tmp_path, monkeypatch, capsys):
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("MLP_SWEEPS_OUTPUTS", str(outputs))
    assert cli.main(["--sweep-id", "s-grid", "--tracking-uri", store["uri"]]) == 0
    (written,) = [line.split(" -> ")[1] for line in capsys.readouterr().out.splitlines() if " -> " in line]
    assert (outputs / "reports" / "s-grid").samefile(written)
    (outputs / "mlflow.db").write_bytes(b"")
    proc = subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "clean-outputs"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    assert not (outputs / "reports").exists()
    assert (outputs / "mlflow.db").is_file()  # the runs themselves stay
