"""The curves of one run read back from MLflow, in the shape of mlp_core's FitResult."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sweeper import names

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)


@dataclass
class RunHistory:
    """The curves of one run, in the shape of mlp_core's FitResult (the figures accept either).

    train_loss: (num_steps,) per-step mini-batch loss, step = index (NaN where a step was not logged).
    val_steps: (P,) int64 global step of each validation point.
    val_loss, val_accuracy, train_accuracy: (P,) float64, NaN where a metric is missing at that point.
    """

    train_loss: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    val_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    val_loss: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    val_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    train_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))

    @property
    def is_empty(self) -> bool:
        return len(self.train_loss) == 0 and len(self.val_steps) == 0


def _latest_by_step(metrics: Iterable[Any]) -> dict[int, float]:
    out: dict[int, float] = {}
    for m in sorted(metrics, key=lambda m: (m.step, m.timestamp)):
        out[int(m.step)] = float(m.value)
    return out


def history_from_metrics(metric_histories: dict[str, Iterable[Any]]) -> RunHistory:
    """A RunHistory from {metric key: [points with .step, .timestamp, .value]} (keys: names.CURVE_METRICS).

    The training loss becomes a dense per-step array (NaN at steps never logged); the metrics of the validation
    points are aligned on the union of their steps (NaN where one of them is missing). A step logged twice keeps its
    latest value.
    """
    train = _latest_by_step(metric_histories.get(names.TRAIN_LOSS, ()))
    if train:
        train_loss = np.full(max(train) + 1, np.nan)
        train_loss[np.fromiter(train.keys(), dtype=np.int64)] = np.fromiter(train.values(), dtype=np.float64)
    else:
        train_loss = np.zeros(0)
    per_point = {k: _latest_by_step(metric_histories.get(k, ()))
                 for k in (names.VAL_LOSS, names.VAL_ACCURACY, names.TRAIN_ACCURACY)}
    steps = np.array(sorted(set().union(*per_point.values())), dtype=np.int64)

    def aligned(key: str) -> np.ndarray:
        values = per_point[key]
        return np.array([values.get(int(s), np.nan) for s in steps], dtype=np.float64)

    return RunHistory(train_loss=train_loss, val_steps=steps, val_loss=aligned(names.VAL_LOSS),
                      val_accuracy=aligned(names.VAL_ACCURACY), train_accuracy=aligned(names.TRAIN_ACCURACY))


def load_history(client: Any, run: Run | str) -> RunHistory:
    """The run's curves: one bulk read on MLflow's sqlite store (sweeper.tracking.mlflow_private.sqlite_metrics), else one
    `get_metric_history` per curve metric (the client follows pagination itself). Skips metrics the run never logged,
    so a FAILED run without metrics gives an empty history."""
    from sweeper.tracking.mlflow_private.sqlite_metrics import SqliteMetrics

    if isinstance(run, str):
        run = client.get_run(run)
    keys = [k for k in names.CURVE_METRICS if k in run.data.metrics]
    bulk = SqliteMetrics.for_client(client)
    if bulk is not None:
        try:
            return history_from_metrics(bulk.history(run.info.run_id, keys))
        except Exception as exc:  # an MLflow whose tables differ: its own reader gives the same points
            log.debug("bulk metric read failed (%s); using get_metric_history", exc)
    return history_from_metrics({k: client.get_metric_history(run.info.run_id, k) for k in keys})
