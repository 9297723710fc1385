"""`mlp-sweep-report`: rebuild the course's figures and tables from runs already in MLflow (no retraining).

Select runs by sweep id, by parent run, or by experiment name plus an MLflow filter string, e.g.

    mlp-sweep-report --sweep-id 2026-11-03_task4_width
    mlp-sweep-report --parent-run-id 3f1c0d...  --out reports/width
    mlp-sweep-report --experiment mlp-sweeps --filter "params.optimizer.momentum = '0.9'"

A sweep's report covers the runs it launched and the runs it reused from earlier launches, like the summary the sweep
attached to its parent run (sweeper.reporting.selection). What is written: sweeper.reporting.report.

Exit codes: 0 written, 1 nothing matched, 2 bad arguments or the tracking store cannot be reached.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from sweeper.paths import outputs_dir, unwritable_reason
from sweeper.redact import mask_credentials

from .selection import SelectionError, select_runs
from .tables import safe_filename

EXIT_NOTHING_MATCHED = 1
EXIT_UNUSABLE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlp-sweep-report",
        description="Rebuild comparison figures and summary tables from runs already in MLflow (no retraining).")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--sweep-id", help="the runs of sweep <ID>, including those it reused (any experiment)")
    which.add_argument("--parent-run-id", help="the runs of the sweep with this parent run, including those it reused")
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


def _fail(message: str, exit_code: int) -> int:
    print(f"mlp-sweep-report: error: {message}", file=sys.stderr)
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.attach and not args.parent_run_id:
        parser.error("--attach needs --parent-run-id")
    # imported here so that --help and argument errors answer before MLflow and matplotlib load
    from mlflow.exceptions import MlflowException

    from sweeper.tracking.store import TrackingError, connect, default_tracking_uri

    from .finalize import finalize_sweep
    from .report import write_report

    selector = args.sweep_id or args.parent_run_id or args.experiment
    out_dir = Path(args.out) if args.out else outputs_dir() / "reports" / safe_filename(selector)
    if out_dir.exists() and not out_dir.is_dir():
        return _fail(f"--out {out_dir} is a file, not a directory; pass a directory to write the report into",
                     EXIT_UNUSABLE)
    blocked = unwritable_reason(out_dir)
    if blocked is not None:
        return _fail(f"cannot write the report to {out_dir}: {blocked}", EXIT_UNUSABLE)
    uri = args.tracking_uri or default_tracking_uri()
    try:
        client = connect(uri)
    except TrackingError as exc:
        return _fail(str(exc), EXIT_UNUSABLE)
    try:
        runs, searched = select_runs(client, sweep_id=args.sweep_id, parent_run_id=args.parent_run_id,
                                     experiment=args.experiment, filter_string=args.filter_string)
    except SelectionError as exc:
        return _fail(str(exc), EXIT_NOTHING_MATCHED)
    except MlflowException as exc:
        if args.filter_string and exc.error_code == "INVALID_PARAMETER_VALUE":
            return _fail(f"--filter {args.filter_string!r} is not a valid MLflow filter: {exc.message} "
                         "(e.g. \"params.optimizer.lr = '0.02'\")", EXIT_UNUSABLE)
        raise
    if not runs:
        return _fail(f"no runs matched: searched {searched} in {mask_credentials(uri)}", EXIT_NOTHING_MATCHED)
    files = write_report(client, runs, out_dir, title=f"mlp-sweeps report: {selector}", searched=searched,
                         by_sweep=bool(args.experiment))
    if args.attach:
        finalize_sweep(client, args.parent_run_id, out_dir / "attached")
    print(f"{len(runs)} runs ({searched}) -> {out_dir}")
    for name in files:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
