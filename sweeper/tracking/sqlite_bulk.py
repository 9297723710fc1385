"""The ONE module that touches MLflow internals: bulk metric writes into MLflow's own sqlite store, and bulk reads
(the format of the UI's saved views is in ``mlflow_private.views_format``).

Writes insert exactly the rows ``log_batch`` would and update ``latest_metrics`` the same way, in one transaction of
the store's own session (so MLflow's busy timeout and lock-error wrapping apply); reads return what
``get_metric_history`` returns. Both cost about a tenth of MLflow's per-point ORM path (measurements and the full
argument: docs/decisions.md, "Metric writes on sqlite").

Internals used: ``client._tracking_client.store``, ``SqlAlchemyStore.ManagedSessionMaker``, ``_get_run``,
``_check_run_is_active``, ``sanitize_metric_value``, ``_update_latest_metrics_if_necessary``,
``mlflow.utils.validation._validate_metric_name`` and the ``SqlMetric`` model, verified against MLflow
``VERIFIED_MLFLOW`` (pyproject pins ``mlflow<4``). ``SqliteMetrics.for_client`` checks every one of them and returns
None when anything differs; callers then use MLflow's public API (``log_batch``, ``get_metric_history``).
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Iterable, NamedTuple

VERIFIED_MLFLOW = "3.17.2"

METRIC_COLUMNS = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")
_STORE_METHODS = ("ManagedSessionMaker", "_get_run", "_check_run_is_active", "sanitize_metric_value",
                  "_update_latest_metrics_if_necessary")


class Point(NamedTuple):
    """One stored metric point, with the attributes of ``mlflow.entities.Metric`` that curves need."""

    step: int
    timestamp: int
    value: float


def _store_of(client: Any) -> Any:
    client = getattr(client, "wrapped", client)  # sweeper.tracking.store.RetryingClient
    tracking_client = getattr(client, "_tracking_client", None)
    return getattr(tracking_client, "store", None)


class SqliteMetrics:
    """Bulk writes of (key, value, step, timestamp_ms) points, and bulk reads; see the module docstring."""

    def __init__(self, store: Any):
        from mlflow.store.tracking.dbmodels.models import SqlMetric

        self.store = store
        self._metric_model = SqlMetric
        # a write session: MLflow (>= 3.x) rejects flushes in its default read-only sessions under pytest
        parameters = inspect.signature(store.ManagedSessionMaker).parameters
        self._session_options = {"read_only": False} if "read_only" in parameters else {}
        table = SqlMetric.__table__
        column = {name: f'"{table.c[name].name}"' for name in METRIC_COLUMNS}
        self._insert = (f'INSERT OR IGNORE INTO "{table.name}" ({", ".join(column.values())}) '
                        f"VALUES ({', '.join('?' * len(METRIC_COLUMNS))})")
        # key, value, timestamp, step, is_nan of one run, for the keys appended as "(?, ?, ...)"
        self._select = (f'SELECT {", ".join(column[name] for name in METRIC_COLUMNS[:5])} FROM "{table.name}" '
                        f'WHERE {column["run_uuid"]} = ? AND {column["key"]} IN ')
        self._checked_keys: set[str] = set()

    @classmethod
    def for_client(cls, client: Any) -> "SqliteMetrics | None":
        """The bulk path for ``client``'s store, or None unless it is MLflow's sqlite ``SqlAlchemyStore`` as expected."""
        try:
            from mlflow.store.tracking.dbmodels.models import SqlMetric
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        except ImportError:
            return None
        store = _store_of(client)
        if not isinstance(store, SqlAlchemyStore) or getattr(store, "db_type", None) != "sqlite":
            return None
        if not all(callable(getattr(store, name, None)) for name in _STORE_METHODS):
            return None
        table = getattr(SqlMetric, "__table__", None)
        if table is None or {c.name for c in table.columns} != set(METRIC_COLUMNS):
            return None
        return cls(store)

    def _validate_key(self, key: str) -> None:
        if key not in self._checked_keys:
            from mlflow.utils.validation import _validate_metric_name

            _validate_metric_name(key)
            self._checked_keys.add(key)

    def _rows(self, run_id: str, points: Iterable[tuple]) -> tuple[list[tuple], dict[str, tuple]]:
        """The rows to insert and the newest (step, timestamp, value, is_nan) per key."""
        rows: list[tuple] = []
        newest: dict[str, tuple] = {}
        sanitize = self.store.sanitize_metric_value
        for key, value, step, timestamp in points:
            value, step, timestamp = float(value), int(step), int(timestamp)
            if timestamp < 0:
                raise ValueError(f"metric {key!r} at step {step}: timestamp must be >= 0, got {timestamp}")
            if math.isfinite(value):
                is_nan = False
            else:
                is_nan, value = sanitize(value)
            rows.append((key, value, timestamp, step, is_nan, run_id))
            best = newest.get(key)
            if best is None:
                self._validate_key(key)
                newest[key] = (step, timestamp, value, is_nan)
            elif (step, timestamp, value) > best[:3]:  # MLflow's order for "latest": step, then timestamp, then value
                newest[key] = (step, timestamp, value, is_nan)
        return rows, newest

    def write(self, run_id: str, points: Iterable[tuple]) -> int:
        """Insert the points (one transaction) and update the run's latest values; returns the number of rows given."""
        rows, newest = self._rows(run_id, points)
        if not rows:
            return 0
        store = self.store
        with store.ManagedSessionMaker(**self._session_options) as session:
            run = store._get_run(run_uuid=run_id, session=session)
            store._check_run_is_active(run)
            session.connection().exec_driver_sql(self._insert, rows)
            latest = [self._metric_model(run_uuid=run_id, key=key, step=step, timestamp=timestamp, value=value,
                                         is_nan=is_nan)
                      for key, (step, timestamp, value, is_nan) in newest.items()]
            store._update_latest_metrics_if_necessary(latest, session)
        return len(rows)

    def history(self, run_id: str, keys: Iterable[str]) -> dict[str, list[Point]]:
        """{key: [Point, ...]} of the run's stored points for ``keys``, in storage order; keys never logged are absent."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, list[Point]] = {}
        if not keys:
            return out
        with self.store.ManagedSessionMaker() as session:
            rows = session.connection().exec_driver_sql(
                self._select + f"({', '.join('?' * len(keys))})", (run_id, *keys)).fetchall()
        nan = float("nan")
        for key, value, timestamp, step, is_nan in rows:
            out.setdefault(key, []).append(Point(int(step), int(timestamp), nan if is_nan else float(value)))
        return out

