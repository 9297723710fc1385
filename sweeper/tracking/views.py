"""The MLflow UI, set up for each sweep: a saved view of its runs, the one link that opens it, and `make ui`.

``write_sweep_view`` runs once per sweep, in the launching process, right after the parent run exists: it stores an
experiment tag ``mlflow.sharedViewState.<view id>`` (format and traps: ``mlflow_private.views_format``) that shows the
sweep's runs (every run of a sweep carries ``mlp_sweeps.sweep.<sweep_id>`` = the parent's id, reused runs included),
all of them, grouped by their ``config_label`` tag so that every run is a visible row without a click. Its charts,
under a title that says how many runs they draw and what the grid varies, are one line chart per row for val/loss
(log y-axis: the step-0 loss would flatten the trained part of a linear one), val/accuracy and train/loss (log)
against the step; its table shows the objective, the stop reason and the swept params as columns. Each run is drawn
in its ``mlflow.runColor``, its configuration's colour in comparison.png (``sweeper.reporting.colours``, set when the
sweep is finalised).

``sweep_link_lines`` are the lines printed at the end of the sweep: the link (for a sqlite store, after the command
that starts the UI on it). When the installed MLflow is not the minor release the view format was verified with, no
view is written and the link opens the plain model-training runs page. ``main`` is `make ui`: it starts the UI on a
sqlite store, then prints and opens the link of the store's latest sweep view, since only a link can choose the
model-training layout (MLflow 3.17 has no per-experiment setting for it).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import webbrowser
from typing import Any, Iterable, Sequence

from .. import names
from ..config.identity import PRESET_KEY, swept_keys
from ..paths import REPO_ROOT
from ..redact import mask_credentials
from .mlflow_private.views_format import WORKFLOW_QUERY, column, runs_page_fragment, sweep_view, view_format_verified
from .queries import tag_equals
from .store import TrackingError, check_reachable, client_for, sqlite_path

log = logging.getLogger(__name__)

CHARTS = (names.VAL_LOSS, names.VAL_ACCURACY, names.TRAIN_LOSS)
LOG_SCALE = (names.VAL_LOSS, names.TRAIN_LOSS)
# the table's columns before the swept params: what a sweep is ranked by, and why each run stopped
TABLE_COLUMNS = (column("metrics", names.OBJECTIVE), column("tags", names.STOP_REASON))
UI_HOST, UI_PORT = "127.0.0.1", 5000  # where `make ui` (and `mlflow ui`) serve by default


def view_id(sweep_id: str) -> str:
    """The view's id (the tag's suffix and the link's viewStateShareKey): the sweep id, URL-safe."""
    return "sweep-" + re.sub(r"[^A-Za-z0-9_-]", "-", sweep_id)


def sweep_run_filter(sweep_id: str, parent_run_id: str) -> str:
    """The MLflow search filter that selects the runs of a sweep (its parent has no such tag)."""
    return tag_equals(names.sweep_link_tag(sweep_id), parent_run_id)


def swept_params(jobs: Iterable[Sequence[str]]) -> list[str]:
    """The params a grid varies (``config.identity.swept_keys``), as the runs log them (a preset as ``name``). A swept
    config group other than the preset (``optimizer=sgd,momentum``) is no single param and is left out."""
    return [names.NAME_PARAM if key == PRESET_KEY else key for key in swept_keys(jobs)
            if key == PRESET_KEY or "." in key]


def charts_title(jobs: Sequence[Sequence[str]] | None, swept: Sequence[str]) -> str:
    """The title above the view's charts, count first: how many runs they draw (a chart's legend shows about two lines
    of run names) and what the grid varies, e.g. ``4 runs: width x depth``; a search's trial count is not known."""
    if jobs is None:
        return "all runs of the search"
    runs = f"{len(jobs)} run{'s' if len(jobs) != 1 else ''}"
    return f"{runs}: {' x '.join(key.rsplit('.', 1)[-1] for key in swept)}" if swept else runs


def write_sweep_view(client: Any, experiment_id: str, sweep_id: str, parent_run_id: str, name: str,
                     num_jobs: int | None = None, jobs: Sequence[Sequence[str]] | None = None) -> str | None:
    """Store the sweep's view in the experiment; its id, or None when this MLflow's UI format is not the verified one
    (or the tag could not be written: the view is a convenience, never a reason to fail a sweep). ``jobs`` are the
    grid's override lists (None for a search): they give the swept params' columns and the charts' title."""
    if not view_format_verified():
        log.info("MLflow's UI is not the release the sweep view was verified with: no view written")
        return None
    key = view_id(sweep_id)
    hidden = [m for m in (*names.CURVE_METRICS, *names.SUMMARY_METRICS) if m not in CHARTS]
    swept = swept_params(jobs or ())
    columns = [*TABLE_COLUMNS, *(column("params", param) for param in swept)]
    value = sweep_view(name, charts_title(jobs, swept), sweep_run_filter(sweep_id, parent_run_id), names.CONFIG_LABEL,
                       CHARTS, hidden, max_runs=max(100, num_jobs or 0, len(jobs or ())), log_scale=LOG_SCALE,
                       columns=columns, created_ms=int(time.time() * 1000))
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


def run_link_lines(tracking_uri: str, experiment_id: str, run_id: str) -> list[str]:
    """What the end of a single run prints about the UI: the command that starts it (sqlite stores) and the run's page
    in the model-training layout."""
    base, command = ui_base(tracking_uri)
    lines = [f"MLflow UI: start it with `{command}`, then open"] if command else ["MLflow UI:"]
    lines.append(f"  {base}/#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW_QUERY}   (the run's page)")
    return lines


def latest_view(client: Any) -> tuple[str, str | None]:
    """(experiment id, view id) of the newest sweep view in the store, or of the sweeps' experiment (no view) when no
    sweep wrote one, or ("0", None) in an empty store."""
    newest: tuple[int, str, str | None] = (-1, "0", None)
    for experiment in client.search_experiments():
        for tag, value in experiment.tags.items():
            if not tag.startswith(names.SHARED_VIEW_PREFIX + "sweep-"):
                continue
            try:
                created = int(json.loads(value)["createdAt"])
            except (ValueError, KeyError, TypeError):
                continue  # a view another tool wrote, in a format of its own
            newest = max(newest, (created, experiment.experiment_id, tag[len(names.SHARED_VIEW_PREFIX):]))
        if newest[0] < 0 and experiment.name == "mlp-sweeps":
            newest = (-1, experiment.experiment_id, None)
    return newest[1], newest[2]


def main(argv: Sequence[str] | None = None) -> int:
    """`make ui`: the MLflow UI on a sqlite store (one web worker, in its own process group, stopped with it), then the
    link to the store's latest sweep view, printed and opened in the browser."""
    parser = argparse.ArgumentParser(prog="make ui", description=main.__doc__)
    parser.add_argument("--store", default=str(REPO_ROOT / "outputs" / "mlflow.db"), help="the sqlite store's path")
    parser.add_argument("--port", type=int, default=UI_PORT)
    parser.add_argument("--no-browser", action="store_true", help="print the link without opening it")
    args = parser.parse_args(argv)
    uri = f"sqlite:///{args.store}"
    if not os.path.isfile(args.store):
        parser.error(f"--store {args.store}: no such file; pass an MLflow sqlite store (a sweep creates "
                     "outputs/mlflow.db)")
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: expected a TCP port, 1 to 65535")
    try:
        check_reachable(uri)
    except TrackingError as exc:
        parser.error(str(exc))
    base = f"http://{UI_HOST}:{args.port}"
    # SIGTERM (docker stop, a test's clean-up) ends like Ctrl-C: through the finally below that stops the UI's group
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", UI_HOST,
                               "--port", str(args.port), "--workers", "1"], start_new_session=True)
    try:
        while True:
            try:
                check_reachable(base, timeout=2.0)
                break
            except TrackingError:
                if server.poll() is not None:
                    return server.returncode or 1
                time.sleep(0.5)  # polls the UI's /health while it starts (about 5-20 s)
        experiment_id, view = latest_view(client_for(uri))
        link = f"{base}/{runs_page_fragment(experiment_id, view)}"
        what = "the latest sweep's view" if view else "the runs page, model-training layout"
        print(f"MLflow UI ({what}; Ctrl-C stops it):\n  {link}", flush=True)
        if not args.no_browser:
            webbrowser.open(link)
        return server.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        stop_group(server)


def stop_group(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM to ``process``'s own group (`mlflow ui` leaves its web workers as children), SIGKILL after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


if __name__ == "__main__":
    sys.exit(main())
