"""The format of the UI's saved views (``sweep_view``); the bulk metric path moved to
``sweeper.tracking.mlflow_private.sqlite_metrics``."""
from __future__ import annotations

import json
from typing import Iterable

from .mlflow_private import VERIFIED_MLFLOW

# ---------------------------------------------------------------------------------------------- the UI's saved views
# MLflow's UI keeps a shared view of the runs page in the experiment tag "mlflow.sharedViewState.<view id>": a JSON
# wrapper {"name", "createdAt", "state"} whose "state" is the JSON of the page's search facets and UI state. That
# format is internal to the UI's JavaScript (ExperimentPageUIState, runs-charts.types, read by the view-state-share
# hook), verified in headless Chromium against MLflow VERIFIED_MLFLOW (tests/sweeper/tracking/test_ui_browser.py);
# ``view_format_verified`` says whether the installed MLflow is that minor version, and callers hand out the plain
# runs-page link otherwise. Traps (../shared/NOTES.md): the UI drops "runsExpanded" (children stay collapsed under
# their parent), so the view groups runs by a tag its runs carry (groups open expanded); a chart left out of the list
# comes back unless listed as deleted; a line chart plots only its first "runsCountToCompare" runs (10 by default);
# a link carrying the app's own search parameters (searchFilter=...) skips the view, so the filter lives in the state.

WORKFLOW_QUERY = "workflowType=machine_learning"  # the model-training layout (without it: the GenAI overview)
VIEW_QUERY = "viewStateShareKey"
_SECTION = "mlp-sweeps-curves"


def view_format_verified(version: str | None = None) -> bool:
    """Whether ``version`` (default: the installed MLflow's) is the minor release the view format was verified with."""
    if version is None:
        import mlflow

        version = mlflow.__version__
    return version.split(".")[:2] == VERIFIED_MLFLOW.split(".")[:2]


def _line_chart(index: int, key: str, runs: int) -> dict:
    return {"uuid": f"mlp-sweeps-line-{index}", "type": "LINE", "runsCountToCompare": runs,
            "metricSectionId": _SECTION, "deleted": False, "isGenerated": False, "metricKey": key,
            "selectedMetricKeys": [key], "lineSmoothness": 0, "xAxisKey": "step", "xAxisScaleType": "linear",
            "scaleType": "linear", "selectedXAxisMetricKey": "", "useGlobalXaxisKey": False,
            "useGlobalLineSmoothing": False}


def _hidden_chart(index: int, key: str) -> dict:
    return {"uuid": f"mlp-sweeps-hidden-{index}", "type": "BAR", "runsCountToCompare": 10, "metricSectionId": _SECTION,
            "deleted": True, "isGenerated": True, "metricKey": key}


def sweep_view(name: str, run_filter: str, group_tag: str, charts: Iterable[str], hidden: Iterable[str],
               max_runs: int, created_ms: int = 0) -> str:
    """The tag value of a runs-page view: the runs ``run_filter`` selects (an MLflow search filter), all shown, grouped
    by the tag ``group_tag`` (groups open expanded, so every run is a visible row) with each run plotted on its own
    in its ``mlflow.runColor``; one line chart per metric of ``charts`` (step on the x-axis, up to ``max_runs`` runs),
    and the metrics ``hidden`` listed as deleted charts so that the UI does not add them back."""
    charts = list(charts)
    state = {
        "searchFilter": run_filter,
        "runsHiddenMode": "SHOW_ALL",
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": group_tag}]},
        "useGroupedValuesInCharts": False,
        "hideEmptyCharts": True,
        "isAccordionReordered": False,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
        "compareRunSections": [
            {"uuid": _SECTION, "name": name, "display": True, "isReordered": False, "deleted": False,
             "isGenerated": False},
            # the UI keeps its two built-in sections last (without them it would list ours twice); both stay empty
            {"uuid": "mlp-sweeps-model", "name": "Model metrics", "display": False, "isReordered": False,
             "deleted": False, "isGenerated": True},
            {"uuid": "mlp-sweeps-system", "name": "System metrics", "display": False, "isReordered": False,
             "deleted": False, "isGenerated": True},
        ],
        "compareRunCharts": [_line_chart(i, key, max_runs) for i, key in enumerate(charts)]
                            + [_hidden_chart(i, key) for i, key in enumerate(k for k in hidden if k not in charts)],
    }
    return json.dumps({"name": name, "createdAt": int(created_ms), "state": json.dumps(state)})


def runs_page_fragment(experiment_id: str, view_id: str | None = None) -> str:
    """``#/experiments/<id>/runs?...``: the model-training runs page; with ``view_id``, that saved view, opened on its
    charts (the runs stay listed on their left)."""
    query = WORKFLOW_QUERY + (f"&{VIEW_QUERY}={view_id}&compareRunsMode=CHART" if view_id else "")
    return f"#/experiments/{experiment_id}/runs?{query}"
