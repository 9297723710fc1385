"""The metric write path: a batch of points (and the owner's heartbeat tags) into one run, bulk or ``log_batch``."""
from __future__ import annotations

import logging
from typing import Any, Iterable

from ..redact import describe
from .store import StoreBusyError, retrying, sqlite_fault

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000
# MLflow's error codes for a write it refuses (run missing or not active, bad metric): the same from either path.
MLFLOW_REFUSALS = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")


def chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def write_metrics(client: Any, run_id: str, points: list[tuple], tags: list[tuple[str, str]],
                  bulk: Any = None) -> Any:
    """Write (key, value, step, timestamp_ms) points and (key, value) run tags; returns the bulk path for the next call.

    With ``bulk`` (a ``mlflow_private.sqlite_metrics.SqliteMetrics``) the points go in as one bulk insert, retried like every
    other write while the store is locked (``retrying``), and the tags (the owner's heartbeat) follow in
    one small ``log_batch``. The errors ``log_batch`` would raise too (run missing or not active, bad metric name or
    value: MLflow's own checks) propagate. Any other failure means this MLflow differs from what the bulk path expects:
    its transaction was rolled back, so nothing is half-written, and ``log_batch`` takes over for this call and, as the
    returned None says, for the rest of the run. Without ``bulk``: ``log_batch`` calls of at most 1000 points, the tags
    riding along in the first.
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException

    run_tags = [RunTag(key, value) for key, value in tags]
    if bulk is not None:
        try:
            retrying(bulk.write, run_id, points, what="log_metrics")
        except StoreBusyError:
            raise
        except Exception as exc:
            if isinstance(exc, MlflowException) and exc.error_code in MLFLOW_REFUSALS or sqlite_fault(exc):
                raise  # log_batch would be refused, or fail on the same broken store file
            log.warning("sqlite bulk metric path failed (%s); using MLflow's log_batch for the rest of this run",
                        describe(exc))
        else:
            if run_tags:
                client.log_batch(run_id, tags=run_tags)
            return bulk
    metrics = [Metric(key, value, timestamp, step) for key, value, step, timestamp in points]
    for chunk in chunks(metrics, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk, tags=run_tags)
        run_tags = []
    return None

