"""What the report's figures plot and what report.md says, for the case that once misled: a full 17-epoch task3c run
beside three 3-epoch task3c seeds, next to a task3_tricks sweep (real temporary sqlite store, fake curves)."""
from __future__ import annotations

import re

import numpy as np
import pytest

pytestmark = pytest.mark.integration

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

from sweeper import names  # noqa: E402
from sweeper.reporting import cli, finalize  # noqa: E402
from sweeper.reporting.history import load_history  # noqa: E402
from sweeper.reporting.plots import comparison_figure  # noqa: E402
from sweeper.reporting.report import course_figure_groups  # noqa: E402
from sweeper.reporting.selection import select_runs  # noqa: E402
from sweeper.reporting.tables import SummaryRow, group_rows, summary_markdown  # noqa: E402

from .test_report import curves, log_child  # noqa: E402

SEEDS_SWEEP = "sweep experiment=task3c trainer.seed=0,1,2"


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("figures", artifact_location=(root / "artifacts").as_uri())

    def params(epochs, seed=0):
        return {"trainer.epochs": epochs, names.SEED_PARAM: seed, names.NUM_PARAMETERS: 50890}

    tricks = client.create_run(exp, run_name="task3_tricks",
                               tags={names.SWEEP_ID: "s-tricks", names.ROLE: names.ROLE_SWEEP_PARENT}).info.run_id
    for preset, loss in (("task2c", 0.40), ("task3a", 0.30)):
        log_child(client, exp, tricks, "s-tricks", preset, f"experiment={preset}", params(3), preset,
                  curves(loss, 0.9), extra_tags={names.CONFIG_HASH_NOSEED: f"h-{preset}"})
    client.set_terminated(tricks, "FINISHED")
    seeds = client.create_run(exp, run_name=SEEDS_SWEEP,
                              tags={names.SWEEP_ID: "s-seeds", names.ROLE: names.ROLE_SWEEP_PARENT}).info.run_id
    for seed in range(3):
        log_child(client, exp, seeds, "s-seeds", f"task3c seed={seed}", f"experiment=task3c trainer.seed={seed}",
                  params(3, seed), "task3c", curves(0.2 + seed / 100, 0.95 + seed / 100),
                  extra_tags={names.CONFIG_HASH_NOSEED: "h-task3c-3"})
    client.set_terminated(seeds, "FINISHED")
    # the full run: a single run (no parent), same preset, 17 epochs
    full = log_child(client, exp, "none", "none", "task3c", "experiment=task3c trainer.epochs=17", params(17), "task3c",
                     curves(0.1, 0.97, stop=1700), extra_tags={names.CONFIG_HASH_NOSEED: "h-task3c-17"})
    for tag in (names.PARENT_RUN_ID, names.SWEEP_ID):
        client.delete_tag(full, tag)
    return {"uri": uri, "client": client, "seeds": seeds}


def test_course_figure_groups_by_config_not_by_preset(store):
    client = store["client"]
    runs, _ = select_runs(client, experiment="figures")
    histories = {r.info.run_id: load_history(client, r) for r in runs}
    (stem, title, groups), = [f for f in course_figure_groups(runs, histories) if f[0] == "task3_tricks"]
    # the 17-epoch run and the three 3-epoch seeds are two configs: two curves, named by what differs
    assert {label: len(h) for label, h in groups.items()} == {
        "task2c baseline": 1, "task3a + improved init": 1,
        "task3c + momentum, epochs=3": 3, "task3c + momentum, epochs=17": 1}
    ax_loss, ax_acc = comparison_figure(groups, title=title).axes
    assert legend_texts(ax_acc) == ["task2c baseline", "task3a + improved init",
                                    "task3c + momentum, epochs=3 (mean ± std over 3 seeds)",
                                    "task3c + momentum, epochs=17"]
    # the 17-epoch curve runs to step 1600, the seeds' mean stops at their own last point
    val_ends = sorted(int(line.get_xdata()[-1]) for line in ax_acc.lines)
    assert val_ends == [1100, 1100, 1100, 1600]
    seeds_acc = ax_acc.lines[2]
    np.testing.assert_allclose(seeds_acc.get_ydata()[-1], 0.96)  # mean of 0.95, 0.96, 0.97


def test_a_seed_sweep_is_titled_and_labelled_without_an_averaged_seed(store, tmp_path, monkeypatch):
    drawn = {}

    def capture(groups, path, title=None, **kwargs):
        drawn.update(groups=groups, title=title)
        path.write_bytes(b"")
        return path

    monkeypatch.setattr(finalize, "plot_comparison", capture)
    finalize.finalize_sweep(store["client"], store["seeds"], tmp_path)
    assert drawn["title"] == f"{SEEDS_SWEEP} (seeds of one config averaged)"
    assert "sweep sweep" not in drawn["title"]
    assert {label: len(h) for label, h in drawn["groups"].items()} == {"task3c": 3}
    (ax_loss, ax_acc) = comparison_figure(drawn["groups"], title=drawn["title"]).axes
    assert legend_texts(ax_acc) == ["task3c (mean ± std over 3 seeds)"]
    assert not re.search(r"seed=\d", " ".join(legend_texts(ax_acc)))
    assert (tmp_path / "summary.md").read_text().startswith(f"# {SEEDS_SWEEP}\n")


def test_report_md_has_one_section_per_sweep_in_order_and_plain_single_runs(store, tmp_path):
    out = tmp_path / "report"
    assert cli.main(["--experiment", "figures", "--tracking-uri", store["uri"], "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    headings = re.findall(r"^#+ .*$", text, re.M)
    assert headings[0] == "# mlp-sweeps report: figures"
    sections = [h for h in headings if h.startswith("## ") and "Mean" not in h]
    assert [re.sub(r" \(started .*", "", h) for h in sections] == [
        "## sweep task3_tricks", f"## {SEEDS_SWEEP}", "## single runs (no sweep)", "## Curves of each run"]
    assert len(headings) == len(set(headings)), headings  # no title repeated
    assert "### Mean ± std over seeds" in text
    # the seeds section lists exactly its three runs, then their mean; no "± 0" for a single run anywhere
    seeds_part = text.split(f"## {SEEDS_SWEEP}")[1].split("## single runs")[0]
    assert len(re.findall(r"^\| task3c seed=\d ", seeds_part, re.M)) == 3
    assert "± 0.0000" not in text
    # integer columns are integers: epochs and the parameter count
    mean_part, verdict_part = (seeds_part.split("### Mean ± std over seeds")[1]
                               .split("**Is the best config really better?**"))
    (mean_row,) = [l for l in mean_part.splitlines() if l.startswith("| task3c | 3 |")]
    # the verdict part: the config's objective over its 3 seeds with a t-interval, and nothing to compare it with
    (ci_row,) = [l for l in verdict_part.splitlines() if l.startswith("| task3c | 3 |")]
    low, high = (float(v) for v in ci_row.strip("|").split("|")[3].split(" to "))
    assert low < float(ci_row.strip("|").split("|")[2]) < high
    assert "Verdict: one config with a finished run: there is nothing to compare it with." in verdict_part
    cells = [c.strip() for c in mean_row.strip("|").split("|")]
    assert cells[6] == "12.0 ± 0.0"  # epochs: a count, not "12.0000 ± 0.0000"
    # the objective's 95 % interval over the seeds closes the row, as the verdict's table gives it
    assert cells[-1] == ci_row.strip("|").split("|")[3].strip() and " to " in cells[-1]
    single = text.split("## single runs (no sweep)")[1]
    row = next(l for l in single.splitlines() if l.startswith("| task3c |"))
    assert "| 50890 |" in row and "| 17 |" in row
    runs_table = text.split("### Mean")[0].split("## sweep task3_tricks")[1].split("**Is the best config")[0]
    assert not re.search(r"\| \d+\.0000 \|", runs_table)
    assert (out / "task3_tricks.png").is_file()
    # which setting mattered, in the section of the sweep that varies one
    tricks = text.split("## sweep task3_tricks")[1].split(f"## {SEEDS_SWEEP}")[0]
    assert "**Which setting matters?**" in tricks and re.search(r"^\| experiment \| 1\.0000 \|", tricks, re.M)


def test_the_seed_table_shows_a_single_run_without_plus_minus_and_counts_as_integers():
    def row(name, group, acc, epochs):
        return SummaryRow(name, name, "FINISHED", group, best_val_accuracy=acc, best_val_loss=1 - acc,
                          final_val_accuracy=acc, final_val_loss=1 - acc, epochs=epochs, seconds=10.0,
                          num_parameters=50890, stop_reason="max_epochs")

    rows = [row("a seed=0", "A", 0.90, 10), row("a seed=1", "A", 0.92, 13), row("b", "B", 0.95, 17)]
    md = summary_markdown(rows, [], group_rows(rows, []))
    table = md.split("## Mean ± std over seeds")[1]
    a_row, b_row = [[c.strip() for c in l.strip("|").split("|")] for l in table.splitlines() if l.startswith("| a")
                    or l.startswith("| b")]
    assert a_row[:3] == ["a", "2", "0.9100 ± 0.0141"] and a_row[6] == "11.5 ± 2.1"
    assert b_row == ["b", "1", "0.9500", "0.0500", "0.9500", "0.0500", "17", "10.0", "-"]  # no interval of 1 seed
    # losses 0.10 and 0.08: mean 0.09 ± t(0.975, 1) * 0.01414 / sqrt(2) = 0.09 ± 0.1271
    assert a_row[-1] == "-0.0371 to 0.2171"
    per_run = md.split("## Mean")[0]
    assert "| 50890 |" in per_run and "| 17 |" in per_run
