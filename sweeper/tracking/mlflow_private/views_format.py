"""The format of the MLflow UI's saved views of the runs page, and the link that opens one.

MLflow's UI keeps a shared view of the runs page in the experiment tag "mlflow.sharedViewState.<view id>": a JSON
wrapper {"name", "createdAt", "state"} whose "state" is the JSON of the page's search facets and UI state. That format
is internal to the UI's JavaScript (ExperimentPageUIState, runs-charts.types, read by the view-state-share hook),
verified in headless Chromium against MLflow ``VERIFIED_MLFLOW`` (tests/sweeper/tracking/test_ui_browser.py);
``view_format_verified`` says whether the installed MLflow is that minor version, and callers hand out the plain
runs-page link otherwise.

Traps (../shared/NOTES.md and the UI bundle): the UI drops "runsExpanded" (children stay collapsed under their parent),
so the view groups runs by a tag its runs carry (groups open expanded); a chart left out of the list comes back unless
listed as deleted; a line chart plots only its first "runsCountToCompare" runs (10 by default); a link carrying the
app's own search parameters (searchFilter=...) skips the view, so the filter lives in the state. A chart's legend is a
wrapping row of run names 32 px high whatever the card's size, so a section of one chart per row fits the most names,
and the section's title says how many runs the charts draw. The layout (GenAI or model training) is not part of a view
nor of the experiment: the UI reads only the link's ``workflowType`` or, without it, the browser's own last choice
(localStorage "mlflow.workflowType", GenAI at first); the ``mlflow.experimentKind`` tag is never read for it.
"""
from __future__ import annotations

import json
from typing import Iterable

from . import VERIFIED_MLFLOW

WORKFLOW_QUERY = "workflowType=machine_learning"  # the model-training layout (without it: the GenAI overview)
VIEW_QUERY = "viewStateShareKey"
_SECTION = "mlp-sweeps-curves"
CARD_HEIGHT = 360  # the UI's own default height of a chart card, in px
RUN_NAME_COLUMN = "attributes.`Run Name`"
# wide enough for a run name and a group label ("Group: " + config_label) of a few overrides; the UI's default cuts
# them after about 20 characters, before the values that tell the runs apart
RUN_NAME_WIDTH = 440


def view_format_verified(version: str | None = None) -> bool:
    """Whether ``version`` (default: the installed MLflow's) is the minor release the view format was verified with."""
    if version is None:
        import mlflow

        version = mlflow.__version__
    return version.split(".")[:2] == VERIFIED_MLFLOW.split(".")[:2]


def column(kind: str, key: str) -> str:
    """The runs table's id of a column: ``kind`` is "metrics", "params" or "tags" (``metrics.`best/val_loss```)."""
    if kind not in ("metrics", "params", "tags"):
        raise ValueError(f"column kind {kind!r}: expected 'metrics', 'params' or 'tags'")
    return f"{kind}.`{key}`"


def _line_chart(index: int, key: str, runs: int, log_scale: bool) -> dict:
    return {"uuid": f"mlp-sweeps-line-{index}", "type": "LINE", "runsCountToCompare": runs,
            "metricSectionId": _SECTION, "deleted": False, "isGenerated": False, "metricKey": key,
            "selectedMetricKeys": [key], "lineSmoothness": 0, "xAxisKey": "step", "xAxisScaleType": "linear",
            "scaleType": "log" if log_scale else "linear", "selectedXAxisMetricKey": "", "useGlobalXaxisKey": False,
            "useGlobalLineSmoothing": False}


def _hidden_chart(index: int, key: str) -> dict:
    return {"uuid": f"mlp-sweeps-hidden-{index}", "type": "BAR", "runsCountToCompare": 10, "metricSectionId": _SECTION,
            "deleted": True, "isGenerated": True, "metricKey": key}


def sweep_view(name: str, section: str, run_filter: str, group_tag: str, charts: Iterable[str],
               hidden: Iterable[str], max_runs: int, log_scale: Iterable[str] = (), columns: Iterable[str] = (),
               created_ms: int = 0) -> str:
    """The tag value of a runs-page view named ``name``: the runs ``run_filter`` selects (an MLflow search filter), all
    shown, grouped by the tag ``group_tag`` (groups open expanded, so every run is a visible row) with each run plotted
    on its own in its ``mlflow.runColor``; under the title ``section``, one line chart per metric of ``charts``, one per
    row (step on the x-axis, up to ``max_runs`` runs, a log y-axis for the metrics of ``log_scale``); the metrics
    ``hidden`` listed as deleted charts so that the UI does not add them back; the table's ``columns`` (``column``
    ids) in that order, after a run-name column wide enough for the names."""
    charts, log_scale, columns = list(charts), set(log_scale), list(columns)
    state = {
        "searchFilter": run_filter,
        "runsHiddenMode": "SHOW_ALL",
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": group_tag}]},
        "useGroupedValuesInCharts": False,
        "hideEmptyCharts": True,
        "isAccordionReordered": False,
        "selectedColumns": columns,
        # a width is applied only to a column listed in the order
        "columnOrder": [RUN_NAME_COLUMN, *columns],
        "columnWidths": {RUN_NAME_COLUMN: RUN_NAME_WIDTH},
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
        "compareRunSections": [
            {"uuid": _SECTION, "name": section, "display": True, "isReordered": False, "deleted": False,
             "isGenerated": False, "columns": 1, "cardHeight": CARD_HEIGHT},
            # the UI keeps its two built-in sections last (without them it would list ours twice); both stay empty
            {"uuid": "mlp-sweeps-model", "name": "Model metrics", "display": False, "isReordered": False,
             "deleted": False, "isGenerated": True},
            {"uuid": "mlp-sweeps-system", "name": "System metrics", "display": False, "isReordered": False,
             "deleted": False, "isGenerated": True},
        ],
        "compareRunCharts": [_line_chart(i, key, max_runs, key in log_scale) for i, key in enumerate(charts)]
                            + [_hidden_chart(i, key) for i, key in enumerate(k for k in hidden if k not in charts)],
    }
    return json.dumps({"name": name, "createdAt": int(created_ms), "state": json.dumps(state)})


def runs_page_fragment(experiment_id: str, view_id: str | None = None) -> str:
    """``#/experiments/<id>/runs?...``: the model-training runs page; with ``view_id``, that saved view, opened on its
    charts (the runs stay listed on their left)."""
    query = WORKFLOW_QUERY + (f"&{VIEW_QUERY}={view_id}&compareRunsMode=CHART" if view_id else "")
    return f"#/experiments/{experiment_id}/runs?{query}"
