"""`mlp-sweep-report`: rebuild the course's figures and tables from runs already in MLflow (no retraining).

Select runs by sweep id, by parent run, or by experiment name plus an MLflow filter string, e.g.

    mlp-sweep-report --sweep-id 2026-11-03_task4_width
    mlp-sweep-report --parent-run-id 3f1c0d...  --out reports/width
    mlp-sweep-report --experiment mlp-sweeps --filter "params.optimizer.momentum = '0.9'"

Written into --out: `comparison.png` (every selected run, seeds grouped into mean ± std), `summary.csv`,
`summary.md`, `report.md` (the table plus links to every figure), `curves/<run>.png` (the two-panel figure of each
run), and the course's figures whose runs exist: `task2c_curves.png`, `task3_tricks.png` (2c → 3a → 3b → 3c),
`task4_width.png` (3c / 4a / 4b) and `task4_depth.png` (3c / 4d / 4e / 4f). A course comparison is drawn when at
least two of its presets have runs; several runs of one preset (seeds) become a mean ± std band.

Exit codes: 0 written, 1 nothing matched, 2 bad arguments or the tracking store cannot be reached.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from mlflow.entities import Run

from sweeper.tracking import mask_credentials, outputs_dir
from sweeper.plots import RunHistory, plot_comparison, plot_curves
from sweeper.summary import (
    PARENT_TAG,
    all_experiment_ids,
    best_row,
    drop_parents,
    finalize_sweep,
    load_history,
    preset_name,
    quote_filter_value,
    run_name,
    safe_filename,
    search_all_runs,
    summary_row,
    write_sweep_outputs,
)

log = logging.getLogger("sweeper.report")

# The course's comparisons: output file stem, title, [(preset, legend label), ...] in drawing order.
COURSE_FIGURES: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("task3_tricks", "Task 3: tricks added one at a time", (
        ("task2c", "task2c baseline"),
        ("task3a", "task3a + improved init"),
        ("task3b", "task3b + improved sigmoid"),
        ("task3c", "task3c + momentum"),
    )),
    ("task4_width", "Task 4: hidden layer width", (
        ("task4a", "task4a"),
        ("task3c", "task3c"),
        ("task4b", "task4b"),
    )),
    ("task4_depth", "Task 4: depth", (
        ("task3c", "task3c"),
        ("task4d", "task4d"),
        ("task4e", "task4e"),
        ("task4f", "task4f"),
    )),
)


class ReportError(Exception):
    """A problem the user must fix; `exit_code` is what main() returns."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the app's store `sqlite:///<outputs>/mlflow.db` (never cwd-relative)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{outputs_dir() / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:"):
        return None
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    rest = rest[1:] if rest.startswith("/") else rest  # sqlite:///rel.db -> rel.db, sqlite:////abs -> /abs
    rest = rest.split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return Path(rest)


def connect(uri: str):
    """An MlflowClient for `uri` that has answered one request; ReportError(exit 2) otherwise.

    A sqlite file that does not exist is an error (opening it would silently create an empty store).
    """
    from mlflow.tracking import MlflowClient

    shown = mask_credentials(uri)
    db = _sqlite_path(uri)
    if db is not None and not db.exists():
        raise ReportError(f"no MLflow store at {shown}: file {db} does not exist "
                          "(pass --tracking-uri or set MLFLOW_TRACKING_URI)", 2)
    # A dead server would otherwise be retried with backoff for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot use this store"
        detail = mask_credentials(str(exc).replace(uri, shown)).splitlines()
        raise ReportError(f"cannot reach the MLflow tracking store {shown}: {type(exc).__name__}: "
                          f"{detail[0] if detail else ''}", 2) from exc
    return client


def _and(*clauses: str | None) -> str:
    return " and ".join(c for c in clauses if c)


def select_runs(client, *, sweep_id: str | None = None, parent_run_id: str | None = None,
                experiment: str | None = None, filter_string: str | None = None) -> tuple[list[Run], str]:
    """(runs, description of what was searched). Parents of other selected runs are dropped."""
    from mlflow.exceptions import MlflowException

    if parent_run_id:
        try:
            parent = client.get_run(parent_run_id)
        except MlflowException as exc:
            raise ReportError(f"parent run {parent_run_id!r} not found: {exc.message}", 1) from exc
        what = f"children of run {parent_run_id} (experiment {parent.info.experiment_id})"
        by_parent = f"tags.`{PARENT_TAG}` = {quote_filter_value(parent_run_id)}"
        runs = search_all_runs(client, [parent.info.experiment_id], _and(by_parent, filter_string))
        if not runs and not filter_string:
            log.warning("run %s has no child runs; reporting on the run itself", parent_run_id)
            runs = [parent]
    elif sweep_id:
        what = f"runs tagged sweep_id={sweep_id!r} in all experiments"
        by_sweep = f"tags.sweep_id = {quote_filter_value(sweep_id)}"
        runs = search_all_runs(client, all_experiment_ids(client), _and(by_sweep, filter_string))
    elif experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments(max_results=50))
            raise ReportError(f"no experiment named {experiment!r}; experiments in the store: "
                              f"{', '.join(names) or 'none'}", 1)
        what = f"runs of experiment {experiment!r}"
        runs = search_all_runs(client, [exp.experiment_id], filter_string or "")
    else:
        raise ReportError("choose the runs: --sweep-id, --parent-run-id or --experiment", 2)
    if filter_string:
        what += f" matching filter {filter_string!r}"
    return drop_parents(runs), what


def _hidden_label(run: Run) -> str:
    p = run.data.params
    sizes = p.get("model.effective_hidden_sizes") or p.get("model.hidden_sizes")
    if sizes and sizes not in ("None", "null", ""):
        items = [s.strip() for s in sizes.strip("[]()").split(",") if s.strip()]
        if len(items) > 2 and len(set(items)) == 1:
            return f"{len(items)}×{items[0]}"
        return "[" + ", ".join(items) + "]"
    width, depth = p.get("model.width"), p.get("model.depth")
    if width and depth:
        return f"{depth}×{width}" if depth != "1" else f"[{width}]"
    return ""


def _course_label(run: Run, preset: str, base: str, figure: str) -> str:
    if figure == "task3_tricks":
        return base
    parts = [base]
    hidden = _hidden_label(run)
    if hidden:
        parts.append(f"hidden {hidden}")
    activation = run.data.params.get("model.activation")
    if figure == "task4_depth" and activation:
        parts.append(activation)
    return ", ".join(parts)


def write_report(client, runs: Sequence[Run], out_dir: str | Path, title: str = "mlp-sweeps report",
                 searched: str = "") -> dict[str, Path]:
    """Write every figure and table for `runs` into `out_dir`; returns {name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    histories: dict[str, RunHistory] = {r.info.run_id: load_history(client, r) for r in runs}
    result = write_sweep_outputs(runs, histories, out_dir, title=title)
    files: dict[str, Path] = dict(result.files)

    by_id = {r.info.run_id: r for r in runs}
    used_names: set[str] = set()
    for run in runs:
        history = histories[run.info.run_id]
        if history.is_empty:
            continue
        name = safe_filename(run_name(run))
        if name in used_names:
            name = f"{name}_{run.info.run_id[:8]}"
        used_names.add(name)
        files[f"curves/{name}.png"] = plot_curves(history, out_dir / "curves" / f"{name}.png", title=run_name(run))

    presets: dict[str, list[Run]] = {}
    for run in runs:
        preset = preset_name(run)
        if preset and not histories[run.info.run_id].is_empty:
            presets.setdefault(preset, []).append(run)

    if "task2c" in presets:
        rows = [summary_row(r, []) for r in presets["task2c"]]
        chosen = best_row(rows) or rows[0]
        run = by_id[chosen["run_id"]]
        files["task2c_curves.png"] = plot_curves(histories[run.info.run_id], out_dir / "task2c_curves.png",
                                                 title=f"task2c baseline: {run_name(run)}")

    for stem, fig_title, members in COURSE_FIGURES:
        present = [(preset, label) for preset, label in members if preset in presets]
        if len(present) < 2:
            continue
        groups = {}
        for preset, label in present:
            group_runs = presets[preset]
            groups[_course_label(group_runs[0], preset, label, stem)] = [histories[r.info.run_id]
                                                                        for r in group_runs]
        files[f"{stem}.png"] = plot_comparison(groups, out_dir / f"{stem}.png", title=fig_title)

    report_md = out_dir / "report.md"
    figure_links = [f"![{name}]({name})" for name in files if name.endswith(".png") and not name.startswith("curves/")]
    curve_links = [f"- [{name}]({name})" for name in files if name.startswith("curves/")]
    text = f"# {title}\n\n"
    if searched:
        text += f"Runs: {searched} ({len(runs)} runs).\n\n"
    text += "\n\n".join(figure_links) + "\n\n"
    text += result.files["summary.md"].read_text().split("\n", 2)[-1]  # without its own title line
    if curve_links:
        text += "\n## Curves of each run\n\n" + "\n".join(curve_links) + "\n"
    report_md.write_text(text)
    files["report.md"] = report_md
    return files


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlp-sweep-report",
        description="Rebuild comparison figures and summary tables from runs already in MLflow (no retraining).")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--sweep-id", help="runs tagged sweep_id=<ID> (any experiment)")
    which.add_argument("--parent-run-id", help="the child runs of this sweep parent run")
    which.add_argument("--experiment", metavar="NAME", help="runs of this MLflow experiment (see --filter)")
    parser.add_argument("--filter", dest="filter_string", default=None,
                        help="MLflow search filter ANDed to the selection, e.g. \"params.model.width = '128'\"")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                             "sqlite:///<repo>/outputs/mlflow.db)")
    parser.add_argument("--out", default=None,
                        help="output directory (default: <repo>/outputs/reports/<selection>)")
    parser.add_argument("--attach", action="store_true",
                        help="with --parent-run-id: also log comparison.png/summary.* to the parent run and tag it "
                             "with the best child (what the end of a sweep does)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.attach and not args.parent_run_id:
        parser.error("--attach needs --parent-run-id")
    selector = args.sweep_id or args.parent_run_id or args.experiment
    out_dir = Path(args.out) if args.out else outputs_dir() / "reports" / safe_filename(selector)
    uri = args.tracking_uri or default_tracking_uri()
    try:
        client = connect(uri)
        runs, searched = select_runs(client, sweep_id=args.sweep_id, parent_run_id=args.parent_run_id,
                                     experiment=args.experiment, filter_string=args.filter_string)
        if not runs:
            raise ReportError(f"no runs matched: searched {searched} in {mask_credentials(uri)}", 1)
        title = f"mlp-sweeps report: {selector}"
        files = write_report(client, runs, out_dir, title=title, searched=searched)
        if args.attach:
            finalize_sweep(client, args.parent_run_id, out_dir / "attached")
    except ReportError as exc:
        print(f"mlp-sweep-report: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{len(runs)} runs ({searched}) -> {out_dir}")
    for name in files:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
