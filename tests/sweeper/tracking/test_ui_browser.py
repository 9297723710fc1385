"""The MLflow UI as a newcomer meets it, in a real browser: Debian's chromium driven by playwright (never
`playwright install`; .ci/setup-browser.sh installs chromium), `make ui`'s own command, a real 3-job sweep.

The sweep logs to a sqlite store; `make ui` (``python -m sweeper.tracking.views``) starts the UI on it and prints the
link to the latest sweep's view, the one the sweep printed. The test opens that link in a fresh browser profile,
without a click, and reads the page: the model-training layout, the three children as visible rows, the val/accuracy
chart with one trace per child in the child's config colour, log y-axes for the losses, every run in each legend
under a title that counts the runs, and in the table the objective, stop reason and swept param as columns
beside run names shown whole. Screenshots stay in the test's tmp dir (``screenshots/``).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from sweeper import names
from sweeper.reporting.colours import PALETTE

from ...handshake import HANG
from ...servers import free_port, stop_group
from ..sweeper_helpers import run_cli, sqlite_uri

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CHROMIUM = shutil.which("chromium")
LINK = re.compile(r"(http://\S+#/experiments/\S+viewStateShareKey=\S+)")
MS = int(HANG * 1000)
CARD = '[data-testid="experiment-view-compare-runs-card"]'

# every chart card's title, its plotly traces [[trace name, colour (of its line or markers), points], ...], its y-axis
# type, and its legend's entries [text, whether the entry is shown whole inside the legend's visible box]
READ_CHARTS = """() => Array.from(document.querySelectorAll('%s')).map(card => {
    const plot = card.querySelector('.js-plotly-plot');
    const legend = Array.from(card.querySelectorAll('div')).find(d => getComputedStyle(d).overflowY === 'auto'
                                                                   && getComputedStyle(d).flexWrap === 'wrap');
    const box = legend && legend.getBoundingClientRect();
    const entries = legend ? Array.from(legend.children).map(e => { const r = e.getBoundingClientRect();
        return [e.innerText.trim(), r.top >= box.top - 1 && r.bottom <= box.bottom + 1 && r.right <= box.right + 1
                                    && e.scrollWidth <= e.clientWidth + 1]; }) : [];
    return [card.innerText.split('\\n')[0],
            ((plot && plot.data) || []).map(t => [t.name, (t.line || {}).color || (t.marker || {}).color,
                                                  (t.x || []).length]),
            plot && plot.layout && plot.layout.yaxis ? plot.layout.yaxis.type : null,
            entries]; })""" % CARD

# the layout switch's two sides: {label: [r, g, b] of its text colour}
READ_SWITCH = """() => Array.from(document.querySelectorAll('aside [role=button] span'))
    .filter(s => ['GenAI', 'Model training'].includes(s.innerText.trim()))
    .map(s => [s.innerText.trim(), getComputedStyle(s).color.match(/[0-9]+/g).slice(0, 3).map(Number)])"""

# the runs table: its column ids, and each run-name link's text with whether it is shown whole (not cut by an ellipsis)
READ_TABLE = """() => [Array.from(document.querySelectorAll('[role=columnheader]')).map(h => h.getAttribute('col-id')),
    Array.from(document.querySelectorAll('[role=gridcell] a[href*="/runs/"]')).map(a => { let e = a, whole = true;
        for (let i = 0; i < 4 && e; i++, e = e.parentElement) whole = whole && e.scrollWidth <= e.clientWidth + 1;
        return [a.innerText.trim(), whole]; })]"""

# the runs table's group rows: the text of each group's label cell ("Group: <label>\n<runs>")
READ_GROUPS = """() => Array.from(document.querySelectorAll('[role=gridcell][col-id*="Run Name"]'))
    .filter(c => !c.querySelector('a[href*="/runs/"]')).map(c => c.innerText.trim()).filter(t => t)"""


def start_make_ui(db, port, log_path):
    """`make ui`'s command on ``db`` (in its own process group) and the link it prints once the UI answers."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "sweeper.tracking.views", "--store", str(db), "--port", str(port),
                             "--no-browser"], stdout=subprocess.PIPE, stderr=open(log_path, "wb"), text=True, env=env,
                            start_new_session=True)
    for line in proc.stdout:  # the UI's own signal that it is up: the link line (EOF if it dies first)
        if LINK.search(line):
            return proc, LINK.search(line).group(1)
    stop_group(proc)
    raise AssertionError(f"make ui ended ({proc.returncode}) without a link: {log_path.read_text()[-3000:]}")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (bash .ci/setup-browser.sh installs it)")
def test_make_ui_opens_the_latest_sweep_readable_in_a_browser(tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    shots = tmp_path / "screenshots"
    shots.mkdir()
    db = tmp_path / "mlflow.db"
    proc = run_cli(["-m", "data=digits", "trainer.epochs=2", "model.width=4,8,16", f"tracking.uri={sqlite_uri(db)}"],
                   tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = LINK.findall(proc.stdout + proc.stderr)
    assert printed and "workflowType=machine_learning" in printed[-1], (proc.stdout + proc.stderr)[-3000:]

    client = MlflowClient(sqlite_uri(db))
    experiment = client.get_experiment_by_name("mlp-sweeps")
    assert "mlflow.experimentKind" not in experiment.tags  # the UI never reads it: the link chooses the layout
    assert experiment.tags[names.PRIMARY_METRIC] == names.VAL_LOSS
    children = [r for r in client.search_runs([experiment.experiment_id])
                if r.data.tags.get(names.ROLE) != names.ROLE_SWEEP_PARENT]
    assert len(children) == 3
    colour_of = {r.info.run_name: r.data.tags[names.RUN_COLOR] for r in children}
    assert len(set(colour_of.values())) == 3 and set(colour_of.values()) <= set(PALETTE)

    port = free_port()
    ui, link = start_make_ui(db, port, tmp_path / "make_ui.log")
    try:
        # make ui lands on the view the sweep printed (the sweep names the default port, make ui its own)
        assert link == printed[-1].replace(":5000/", f":{port}/"), (link, printed[-1])
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                # a fresh profile; tall enough for the three charts of one a row (the UI draws a chart only once it
                # scrolls into view)
                page = browser.new_context(viewport={"width": 1600, "height": 1800}).new_page()
                page.goto(link)
                # the three line charts, each with data: the page has loaded the runs and their histories
                page.wait_for_function(f"() => ({READ_CHARTS})().filter(c => c[1].length > 0).length >= 3",
                                       timeout=MS)
                page.screenshot(path=str(shots / "sweep_view.png"), timeout=MS)
                charts = {title: rest for title, *rest in page.evaluate(READ_CHARTS)}

                # the model-training layout: its runs page with the charts, not the GenAI overview; the layout
                # switch shows the selected side in the darker text (it has no aria state to read)
                sidebar = page.locator("aside").first.inner_text().split("\n")
                assert {"Runs", "Models"} <= set(sidebar), sidebar
                assert not {"Observability", "Evaluation", "Judges"} & set(sidebar), sidebar
                switch = dict(page.evaluate(READ_SWITCH))
                assert sum(switch["Model training"]) < sum(switch["GenAI"]), switch
                # every child is a visible row of the runs list, without a click (its name links to the run)
                for run in children:
                    assert page.locator(f'a[href*="{run.info.run_id}"]').first.is_visible(), run.info.run_name
                # one chart per metric of the view, step on the x-axis
                assert {names.VAL_LOSS, names.VAL_ACCURACY, names.TRAIN_LOSS} <= set(charts)
                # val/accuracy: one trace per child, in the child's config colour (the UI also draws each run a
                # second time, faintly, as the unsmoothed line: colour + alpha "26")
                traces = charts[names.VAL_ACCURACY][0]
                solid = {name: colour for name, colour, points in traces if colour and len(colour) == 7 and points > 0}
                assert solid == colour_of, traces
                # the losses on a log axis: the step-0 loss no longer squeezes the trained part into a few pixels
                assert {key: charts[key][1] for key in (names.VAL_LOSS, names.TRAIN_LOSS, names.VAL_ACCURACY)} == {
                    names.VAL_LOSS: "log", names.TRAIN_LOSS: "log", names.VAL_ACCURACY: "linear"}
                # each legend lists every run (as "<run name> (<metric>)"), but shows two lines of it whatever the
                # card's size (MLflow 3.17): the charts' title says how many runs they draw, and what the grid varies
                for key in (names.VAL_LOSS, names.VAL_ACCURACY, names.TRAIN_LOSS):
                    legend = charts[key][2]
                    assert sorted(text.removesuffix(f" ({key})") for text, _ in legend) == sorted(colour_of), legend
                    # what the sweep varies leads each name: a name cut short still tells the runs apart
                    assert all(text.startswith("width=") for text, _ in legend), legend
                assert page.get_by_text("3 runs: width", exact=True).first.is_visible()
                page.locator(CARD, has_text=names.VAL_LOSS).first.screenshot(path=str(shots / "val_loss.png"),
                                                                            timeout=MS)

                # the table (the same view without the charts): the objective, the stop reason and the swept param
                # as columns, and every run name shown whole
                page.goto(link.replace("&compareRunsMode=CHART", ""))
                page.wait_for_function(f"() => ({READ_TABLE})()[1].length >= 3", timeout=MS)
                columns, rows = page.evaluate(READ_TABLE)
                wanted = ["metrics.`best/val_loss`", "tags.`stop_reason`", "params.`model.width`"]
                assert set(wanted) <= set(columns), columns  # (the header cells' DOM order is not the shown one)
                assert sorted(name for name, _ in rows) == sorted(colour_of) and all(whole for _, whole in rows), rows
                assert all(name.startswith("width=") for name, _ in rows), rows
                # the group rows (one per config, by its config_label) lead with the swept value too
                groups = [g.split("\n")[0].removeprefix("Group: ") for g in page.evaluate(READ_GROUPS)
                          if g.startswith("Group: ")]
                assert sorted(g.rsplit(" (", 1)[0] for g in groups) == sorted(colour_of), groups
                page.screenshot(path=str(shots / "sweep_table.png"), timeout=MS)
                # a child's own page, as a click on its name opens it
                child = children[0]
                page.goto(f"{link.split('#')[0]}#/experiments/{experiment.experiment_id}/runs/{child.info.run_id}"
                          "?workflowType=machine_learning")
                page.get_by_text(child.info.run_name).first.wait_for(timeout=MS)
                page.screenshot(path=str(shots / "run_page.png"), timeout=MS)
            finally:
                browser.close()
    finally:
        stop_group(ui)
    assert ui.returncode == 143  # SIGTERM: make ui stopped its UI and exited as Ctrl-C or docker stop would have it
    assert sorted(p.name for p in shots.iterdir()) == ["run_page.png", "sweep_table.png", "sweep_view.png",
                                                       "val_loss.png"]
