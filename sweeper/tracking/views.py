"""The MLflow UI, set up for each sweep: a saved view of its runs, and the one link that opens it.

``write_sweep_view`` runs once per sweep, in the launching process, right after the parent run exists: it stores an
experiment tag ``mlflow.sharedViewState.<view id>`` (format and traps: ``sqlite_bulk.sweep_view``) that shows the
sweep's runs (every run of a sweep carries ``mlp_sweeps.sweep.<sweep_id>`` = the parent's id, reused runs included),
all of them, grouped by their ``config_label`` tag so that every run is a visible row without a click, with one line
chart each for val/loss, val/accuracy and train/loss against the step. Each run is drawn in its ``mlflow.runColor``,
its configuration's colour in comparison.png (``sweeper.reporting.colours``, set when the sweep is finalised).

``sweep_link_lines`` are the lines printed at the end of the sweep: the link (for a sqlite store, after the command
that starts the UI on it). When the installed MLflow is not the minor release the view format was verified with, no
view is written and the link opens the plain model-training runs page.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any

from .. import names
from ..paths import REPO_ROOT
from ..redact import mask_credentials
from .queries import tag_equals
from .sqlite_bulk import runs_page_fragment, sweep_view, view_format_verified
from .store import sqlite_path

log = logging.getLogger(__name__)

CHARTS = (names.VAL_LOSS, names.VAL_ACCURACY, names.TRAIN_LOSS)
UI_HOST, UI_PORT = "127.0.0.1", 5000  # where `make ui` (and `mlflow ui`) serve by default


def view_id(sweep_id: str) -> str:
    """The view's id (the tag's suffix and the link's viewStateShareKey): the sweep id, URL-safe."""
    return "sweep-" + re.sub(r"[^A-Za-z0-9_-]", "-", sweep_id)


def sweep_run_filter(sweep_id: str, parent_run_id: str) -> str:
    """The MLflow search filter that selects the runs of a sweep (its parent has no such tag)."""
    return tag_equals(names.sweep_link_tag(sweep_id), parent_run_id)


def write_sweep_view(client: Any, experiment_id: str, sweep_id: str, parent_run_id: str, name: str,
                     num_jobs: int | None = None) -> str | None:
    """Store the sweep's view in the experiment; its id, or None when this MLflow's UI format is not the verified one
    (or the tag could not be written: the view is a convenience, never a reason to fail a sweep)."""
    if not view_format_verified():
        log.info("MLflow's UI is not the release the sweep view was verified with: no view written")
        return None
    key = view_id(sweep_id)
    hidden = [m for m in (*names.CURVE_METRICS, *names.SUMMARY_METRICS) if m not in CHARTS]
    value = sweep_view(name, sweep_run_filter(sweep_id, parent_run_id), names.CONFIG_LABEL, CHARTS, hidden,
                       max_runs=max(100, num_jobs or 0), created_ms=int(time.time() * 1000))
    try:
        client.set_experiment_tag(experiment_id, names.SHARED_VIEW_PREFIX + key, value)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not store the sweep's UI view: %s", exc)
        return None
    return key


def ui_base(tracking_uri: str) -> tuple[str, str | None]:
    """(the UI's address, the command that starts it or None): an http(s) store is its own UI; a sqlite store needs
    `make ui` (the project's store) or `mlflow ui` on it."""
    if tracking_uri.startswith(("http://", "https://")):
        return mask_credentials(tracking_uri).rstrip("/"), None
    base = f"http://{UI_HOST}:{UI_PORT}"
    db = sqlite_path(tracking_uri)
    if db is not None and db == REPO_ROOT / "outputs" / "mlflow.db":
        return base, "make ui"
    return base, f"mlflow ui --backend-store-uri {mask_credentials(tracking_uri)} --port {UI_PORT}"


def sweep_link(tracking_uri: str, experiment_id: str, view: str | None) -> str:
    """The link that opens the sweep's view (or the plain model-training runs page when ``view`` is None)."""
    base, _ = ui_base(tracking_uri)
    return f"{base}/{runs_page_fragment(experiment_id, view)}"


def sweep_link_lines(tracking_uri: str, experiment_id: str, view: str | None) -> list[str]:
    """What the end of a sweep prints about the UI: the command that starts it (sqlite stores) and the one link."""
    _, command = ui_base(tracking_uri)
    what = "the sweep's runs and curves" if view else "the experiment's runs"
    lines = [f"MLflow UI: start it with `{command}`, then open"] if command else ["MLflow UI:"]
    lines.append(f"  {sweep_link(tracking_uri, experiment_id, view)}   ({what})")
    return lines
