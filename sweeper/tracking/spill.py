"""When the store fails during training: the run's unsaved metric points go to a spill file in its run dir, and
``mlp-sweep-replay <run dir>`` uploads them once the store answers again.

``MetricSink.flush`` calls ``spill`` when a write fails (after the bounded retries of ``store.bound_http_retries``)
or is interrupted by a second Ctrl-C: the points it could not write are appended to ``<run dir>/metrics_spill.jsonl``
(a header line with the run id and the masked URI, then one ``[key, value, step, timestamp_ms]`` line per point), and
the job stops with one ``StoreUnavailable`` sentence naming the file and the command. The replay is idempotent: it
reads the run's stored history first and uploads only the points that are not there yet, so replaying twice, or a
batch that reached the store although its answer was lost, never duplicates a point. It then ends a still RUNNING run
FAILED with the original error tagged, or, when the store failed only after training (the summary metrics, tags and
artifact files are then spilled too), writes those and ends it FINISHED.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from .. import names
from ..redact import mask_credentials
from .store import connect, store_failure
from .store_checks import TrackingError, one_line

MAX_METRICS_PER_BATCH = 1000
EXIT_UNUSABLE = 2


class StoreUnavailable(TrackingError):
    """The store failed during training; the unsaved points are in the spill file. One sentence, no traceback."""


def spill(run_dir: Path, run_id: str, tracking_uri: str, points: list[tuple], exc: BaseException,
          finish: dict | None = None) -> Path:
    """Append ``points`` (key, value, step, timestamp_ms) to the run dir's spill file (header first); returns its path.

    ``finish`` (a failure after training): the run's ``tags``, ``artifacts`` (file paths) and end ``status``, which
    the replay writes too; without it the replay ends the run FAILED with the error.
    """
    path = Path(run_dir) / names.SPILL_FILE
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a") as handle:
        if not new and not _ends_a_line(path):  # a torn line from an earlier writer stays alone on its line
            handle.write("\n")
        if new:
            header = {"run_id": run_id, "tracking_uri": mask_credentials(tracking_uri),
                      "error": store_failure(tracking_uri, exc),
                      **(finish or {})}
            handle.write(json.dumps(header) + "\n")
        for key, value, step, timestamp in points:
            handle.write(json.dumps([key, float(value), int(step), int(timestamp)]) + "\n")
    return path


def _ends_a_line(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def unavailable(path: Path, run_id: str, tracking_uri: str, count: int, exc: BaseException,
                finish: dict | None = None) -> StoreUnavailable:
    when, then = ("after training", "its summary, tags and artifact files, and ends the run FINISHED") if finish \
        else ("during training", "them and ends the run FAILED")
    unsaved = f"its {count} unsaved metric points are" if count or not finish else "its end status is"
    return StoreUnavailable(
        f"the MLflow store {mask_credentials(tracking_uri)} failed {when} ({store_failure(tracking_uri, exc)}); "
        f"run {run_id} stopped and {unsaved} in {path}: once the store answers again, `mlp-sweep-replay {path.parent}` uploads "
        f"{then}")


class Spill(NamedTuple):
    """A spill file as read: its header, its complete points in order, and the numbers of the lines skipped."""

    header: dict
    points: list[tuple]
    skipped: list[int]


class TornSpill(ValueError):
    """The spill file has no complete header: the job was stopped before it wrote one, so no run can be named."""


def read_spill(path: Path) -> Spill:
    """The header and every complete point of ``path``. A line the job did not finish writing (it was killed while
    spilling: a torn last line) is skipped and listed, never guessed at; a file without a whole header raises
    ``TornSpill``."""
    lines = path.read_text(errors="replace").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or not isinstance(header.get("run_id"), str):
        state = "is empty" if not "".join(lines).strip() else "has no complete header line"
        raise TornSpill(f"{path} {state} (the job was stopped while writing it): it names no run, so nothing can be "
                        "replayed from it")
    points, skipped = [], []
    for number, line in enumerate(lines[1:], start=2):
        point = _point(line)
        if point is not None:
            points.append(point)
        elif line.strip():
            skipped.append(number)
    return Spill(header, points, skipped)


def _point(line: str) -> tuple | None:
    """``(key, value, step, timestamp_ms)`` of a whole point line, None for a torn or foreign one."""
    try:
        key, value, step, timestamp = json.loads(line)
    except (json.JSONDecodeError, TypeError, ValueError):
        return None
    if not isinstance(key, str) or not all(isinstance(n, (int, float)) for n in (value, step, timestamp)):
        return None
    return key, float(value), int(step), int(timestamp)


def _signature(step: int, timestamp: int, value: float) -> tuple:
    return int(step), int(timestamp), "nan" if math.isnan(value) else float(value)


def replay(client: Any, header: dict, points: list[tuple]) -> tuple[int, int, str]:
    """Upload the points the run lacks; end a RUNNING run FAILED. Returns (uploaded, already there, final status)."""
    from mlflow.entities import Metric, RunTag

    run_id = header["run_id"]
    run = client.get_run(run_id)
    stored: dict[str, set] = {}
    missing: list[Any] = []
    for key, value, step, timestamp in points:
        if key not in stored:
            stored[key] = {_signature(m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)}
        signature = _signature(step, timestamp, value)
        if signature not in stored[key]:
            stored[key].add(signature)
            missing.append(Metric(key, float(value), int(timestamp), int(step)))
    for start in range(0, len(missing), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=missing[start:start + MAX_METRICS_PER_BATCH])
    status = run.info.status
    if status != "RUNNING":  # ended meanwhile (marked KILLED once its owner was gone): its status stays
        return len(missing), len(points) - len(missing), status
    if "status" in header:  # training completed; the summary's tags and files follow (rewriting them is harmless)
        tags = header.get("tags", {})
        for artifact in header.get("artifacts", []):
            client.log_artifact(run_id, artifact)
    else:
        tags = {names.ERROR: header.get("error", "the store failed during training")}
    if tags:
        client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])
    status = header.get("status", "FAILED")
    client.set_terminated(run_id, status)
    return len(missing), len(points) - len(missing), status


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``mlp-sweep-replay``."""
    parser = argparse.ArgumentParser(
        prog="mlp-sweep-replay",
        description=f"Upload the metric points a run could not write (its {names.SPILL_FILE}) into its MLflow run, "
                    "once the store answers again. Idempotent: points already stored are skipped.")
    parser.add_argument("run_dir", help="the run's output dir, as the job's error message named it")
    parser.add_argument("--tracking-uri", default=None,
                        help="the store (default: the one the run used, unless its URI held credentials; then "
                             "$MLFLOW_TRACKING_URI)")
    args = parser.parse_args(argv)
    path = Path(args.run_dir) / names.SPILL_FILE
    if not path.is_file():
        print(f"mlp-sweep-replay: error: {path} does not exist: pass the run dir that the job's error message "
              "named", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        header, points, skipped = read_spill(path)
    except TornSpill as exc:
        print(f"mlp-sweep-replay: error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    recorded = header.get("tracking_uri", "")
    uri = args.tracking_uri or (recorded if "***" not in recorded else os.environ.get("MLFLOW_TRACKING_URI", ""))
    try:
        client = connect(uri)
        uploaded, present, status = replay(client, header, points)
    except TrackingError as exc:
        print(f"mlp-sweep-replay: error: {mask_credentials(exc)}", file=sys.stderr)
        return EXIT_UNUSABLE
    except Exception as exc:  # the store failed again, or the run is gone: nothing is lost, the file stays
        print(f"mlp-sweep-replay: error: could not replay {path} into run {header['run_id']} in "
              f"{mask_credentials(uri)}: {one_line(exc)}; the file is kept, run the command again", file=sys.stderr)
        return EXIT_UNUSABLE
    print(f"run {header['run_id']}: {uploaded} metric points uploaded, {present} were already stored; "
          f"the run is {status}")
    if skipped:  # torn by a kill while spilling: the rest was replayed
        numbers = ", ".join(map(str, skipped))
        print(f"skipped {len(skipped)} incomplete line(s) of {path} (line {numbers}), cut off when the job was "
              "stopped while writing them: their points are lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
