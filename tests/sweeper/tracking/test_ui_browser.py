"""The MLflow UI as a newcomer meets it, in a real browser: Debian's chromium driven by playwright (never
`playwright install`; .ci/setup-browser.sh installs chromium), a real `mlflow server`, a real 3-job sweep.

The sweep logs to the server; the test opens the one link the sweep printed, in a fresh browser profile, without a
click, and reads the page: the model-training layout, the three children as visible rows, the val/accuracy chart with
one trace per child in the child's config colour. Screenshots stay in the test's tmp dir (``screenshots/``).
"""
from __future__ import annotations

import re
import shutil

import pytest
from mlflow.tracking import MlflowClient

from sweeper import names
from sweeper.reporting.colours import PALETTE

from ...handshake import HANG
from ...servers import LocalServer
from ..sweeper_helpers import run_cli, sqlite_uri

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CHROMIUM = shutil.which("chromium")
LINK = re.compile(r"(http://\S+#/experiments/\S+viewStateShareKey=\S+)")
MS = int(HANG * 1000)

# every chart card's plotly traces: [title, [[trace name, colour (of its line or markers), points], ...]]
READ_CHARTS = """() => Array.from(document.querySelectorAll('[data-testid="experiment-view-compare-runs-card"]'))
    .map(card => { const plot = card.querySelector('.js-plotly-plot');
                   return [card.innerText.split('\\n')[0],
                           ((plot && plot.data) || []).map(t => [t.name, (t.line || {}).color || (t.marker || {}).color, (t.x || []).length])]; })"""

# the layout switch's two sides: {label: [r, g, b] of its text colour}
READ_SWITCH = """() => Array.from(document.querySelectorAll('aside [role=button] span'))
    .filter(s => ['GenAI', 'Model training'].includes(s.innerText.trim()))
    .map(s => [s.innerText.trim(), getComputedStyle(s).color.match(/[0-9]+/g).slice(0, 3).map(Number)])"""


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (bash .ci/setup-browser.sh installs it)")
def test_the_printed_link_opens_the_sweep_ready_in_a_browser(tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    shots = tmp_path / "screenshots"
    shots.mkdir()
    store = sqlite_uri(tmp_path / "mlflow.db")
    MlflowClient(store).search_experiments()  # migrate once, before the server's workers open it
    with LocalServer(store, artifacts_destination=str(tmp_path / "artifacts"), log_path=tmp_path / "server.log") as server:
        proc = run_cli(["-m", "data=digits", "trainer.epochs=2", "model.width=4,8,16", f"tracking.uri={server.uri}"],
                       tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        links = LINK.findall(proc.stdout + proc.stderr)
        assert links and links[-1].startswith(server.uri + "/#/experiments/"), (proc.stdout + proc.stderr)[-3000:]
        link = links[-1]
        assert "workflowType=machine_learning" in link

        client = MlflowClient(server.uri)
        experiment = client.get_experiment_by_name("mlp-sweeps")
        assert experiment.tags[names.EXPERIMENT_KIND] == names.EXPERIMENT_KIND_VALUE
        assert experiment.tags[names.PRIMARY_METRIC] == names.VAL_LOSS
        children = [r for r in client.search_runs([experiment.experiment_id])
                    if r.data.tags.get(names.ROLE) != names.ROLE_SWEEP_PARENT]
        assert len(children) == 3
        colour_of = {r.info.run_name: r.data.tags[names.RUN_COLOR] for r in children}
        assert len(set(colour_of.values())) == 3 and set(colour_of.values()) <= set(PALETTE)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()  # a fresh profile
                page.goto(link)
                # the three line charts, each with data: the page has loaded the runs and their histories
                page.wait_for_function(f"() => ({READ_CHARTS})().filter(c => c[1].length > 0).length >= 3",
                                       timeout=MS)
                page.screenshot(path=str(shots / "sweep_view.png"))
                charts = dict(page.evaluate(READ_CHARTS))

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
                solid = {name: colour for name, colour, points in charts[names.VAL_ACCURACY]
                         if colour and len(colour) == 7 and points > 0}
                assert solid == colour_of, charts[names.VAL_ACCURACY]
                page.locator('[data-testid="experiment-view-compare-runs-card"]',
                             has_text=names.VAL_ACCURACY).first.screenshot(path=str(shots / "val_accuracy.png"))
            finally:
                browser.close()
    assert sorted(p.name for p in shots.iterdir()) == ["sweep_view.png", "val_accuracy.png"]
