"""The sqlite bulk metric path against MLflow's own log_batch, on real sqlite stores."""
from __future__ import annotations

import logging
import math
import sqlite3
import threading

import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeper.tracking.run import RunTracker
from sweeper.tracking.mlflow_private.sqlite_metrics import SqliteMetrics
from sweeper.tracking.store import RetryingClient
from sweeper import names

from ...handshake import HANG

T0 = 1_700_000_000_000
# Two batches as a trainer sends them, plus the awkward cases: NaN and infinities, an exact duplicate (dropped by
# both paths), the same step logged twice with other values, a key that first appears in the second batch, and a
# second batch whose steps are lower than the first's (the latest value must stay the one at the highest step).
BATCH_1 = ([(names.TRAIN_LOSS, 2.5 - 0.01 * s, s, T0 + s) for s in range(0, 1500)]
           + [(names.VAL_LOSS, 1.25, 0, T0), (names.VAL_LOSS, float("nan"), 500, T0 + 500),
              (names.VAL_ACCURACY, float("inf"), 500, T0 + 500), (names.VAL_ACCURACY, float("-inf"), 600, T0 + 600),
              (names.TRAIN_LOSS, 2.5, 0, T0),  # exact duplicate of the first point
              (names.TRAIN_LOSS, 7.0, 10, T0 + 10), (names.TRAIN_LOSS, -7.0, 1499, T0 + 1499)])
BATCH_2 = ([(names.TRAIN_LOSS, 0.5, s, T0 + 5000 + s) for s in range(100, 110)]
           + [(names.VAL_LOSS, 0.75, 1000, T0 + 1000), (names.BEST_VAL_LOSS, 0.75, 0, T0 + 9000)])


def history(client, run_id, key):
    """(step, timestamp, value) sorted; NaN as the string 'nan' so that equal histories compare equal."""
    points = [(m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
              for m in client.get_metric_history(run_id, key)]
    return sorted(points, key=lambda p: (p[0], p[1], str(p[2])))


def latest(client, run_id):
    return {k: "nan" if math.isnan(v) else v for k, v in client.get_run(run_id).data.metrics.items()}


@pytest.fixture
def client(store, tmp_path):
    client = MlflowClient(store)
    client.experiment_id = client.create_experiment("bulk", artifact_location=(tmp_path / "art").as_uri())
    return client


def log_batch_path(client, run_id, points):
    metrics = [Metric(k, v, t, s) for k, v, s, t in points]
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])


def test_bulk_path_stores_exactly_what_log_batch_stores(client):
    reference = client.create_run(client.experiment_id).info.run_id
    bulk = client.create_run(client.experiment_id).info.run_id
    writer = SqliteMetrics.for_client(RetryingClient(client))
    assert writer is not None
    for batch in (BATCH_1, BATCH_2):
        log_batch_path(client, reference, batch)
        assert writer.write(bulk, batch) == len(batch)
    keys = {k for k, *_ in BATCH_1 + BATCH_2}
    for key in keys:
        assert history(client, bulk, key) == history(client, reference, key), key
    assert len(history(client, bulk, names.TRAIN_LOSS)) == 1500 + 1 + 1 + 10  # duplicate dropped, step 10 and 1499 twice
    assert latest(client, bulk) == latest(client, reference)
    # highest step, then newest timestamp, then (MLflow's rule) the larger value: -7.0 beats 2.5 - 14.99 at step 1499
    assert latest(client, bulk)[names.TRAIN_LOSS] == -7.0
    assert latest(client, bulk)[names.VAL_ACCURACY] == -1.7976931348623157e308  # -inf as MLflow stores it
    # writing a batch again (a retried call) adds nothing
    writer.write(bulk, BATCH_2)
    assert history(client, bulk, names.TRAIN_LOSS) == history(client, reference, names.TRAIN_LOSS)


def test_bulk_path_refuses_what_log_batch_refuses(client):
    run_id = client.create_run(client.experiment_id).info.run_id
    writer = SqliteMetrics.for_client(client)
    with pytest.raises(MlflowException, match="Names may only contain"):
        writer.write(run_id, [("bad\x00key", 1.0, 0, T0)])
    client.delete_run(run_id)
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        writer.write(run_id, [(names.TRAIN_LOSS, 1.0, 0, T0)])
    with pytest.raises(MlflowException, match="not found"):
        writer.write("0" * 32, [(names.TRAIN_LOSS, 1.0, 0, T0)])


def test_only_mlflows_sqlite_store_gets_the_bulk_path(tmp_path):
    assert SqliteMetrics.for_client(MlflowClient("http://127.0.0.1:9")) is None
    assert SqliteMetrics.for_client(object()) is None


def test_tracker_uses_the_bulk_path_and_keeps_one_log_batch_free_of_metrics(client, monkeypatch):
    calls = []
    monkeypatch.setattr(MlflowClient, "log_batch", lambda self, *a, **k: calls.append(k) or None)
    tracker = RunTracker.start(RetryingClient(client), client.experiment_id, "bulk", {})
    assert tracker.bulk_writer is not None
    tracker.log_metrics([(k, v, s, t) for k, v, s, t in BATCH_1])
    assert all(not call.get("metrics") for call in calls)  # at most the heartbeat tags went through log_batch
    monkeypatch.undo()
    assert len(history(client, tracker.run_id, names.TRAIN_LOSS)) == 1502


def test_tracker_falls_back_to_log_batch_when_mlflow_internals_differ(client, caplog):
    """A schema the bulk path does not expect (a renamed column): the rolled-back write goes through log_batch."""
    tracker = RunTracker.start(client, client.experiment_id, "fallback", {})
    reference = client.create_run(client.experiment_id).info.run_id
    tracker.bulk_writer._insert = tracker.bulk_writer._insert.replace('"is_nan"', '"is_nan_v2"')
    with caplog.at_level(logging.WARNING, logger="sweeper.tracking"):
        tracker.log_metrics(BATCH_1)
    assert tracker.bulk_writer is None and "using MLflow's log_batch" in caplog.text and "is_nan_v2" in caplog.text
    tracker.log_metrics(BATCH_2)
    log_batch_path(client, reference, BATCH_1)
    log_batch_path(client, reference, BATCH_2)
    for key in (names.TRAIN_LOSS, names.VAL_LOSS, names.VAL_ACCURACY, names.BEST_VAL_LOSS):
        assert history(client, tracker.run_id, key) == history(client, reference, key)
    assert latest(client, tracker.run_id) == latest(client, reference)


def test_tracker_on_a_deleted_run_raises_like_log_batch(client, caplog):
    tracker = RunTracker.start(client, client.experiment_id, "deleted", {})
    client.delete_run(tracker.run_id)
    with caplog.at_level(logging.WARNING, logger="sweeper.tracking"):
        with pytest.raises(MlflowException, match="must be in the 'active' state"):
            tracker.log_metrics([(names.TRAIN_LOSS, 1.0, 0, T0)])
        with pytest.raises(MlflowException, match="Names may only contain"):
            tracker.log_metrics([("bad\x00key", 1.0, 0, T0)])
    assert tracker.bulk_writer is not None and "log_batch" not in caplog.text  # MLflow's own refusal, no fallback


@pytest.mark.soak
def test_bulk_write_waits_for_a_held_lock_and_loses_nothing(client, store):
    """Another connection holds an EXCLUSIVE lock and releases it only once the write has sent its first statement
    (a SQLAlchemy event from the writer, not a timer): the write must wait for the lock, then store everything."""
    from sqlalchemy import event

    run_id = client.create_run(client.experiment_id).info.run_id
    writer = SqliteMetrics.for_client(client)
    holder = sqlite3.connect(store.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    started = threading.Event()  # the write's first statement other than MLflow's PRAGMAs, which needs the lock
    released_while_writing = []

    def on_statement(conn, cursor, statement, *args):
        if not statement.lstrip().upper().startswith("PRAGMA"):
            started.set()

    def release():
        released_while_writing.append(started.wait(timeout=HANG))
        holder.execute("COMMIT")

    event.listen(writer.store.engine, "before_cursor_execute", on_statement)
    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        writer.write(run_id, BATCH_2)
    finally:
        event.remove(writer.store.engine, "before_cursor_execute", on_statement)
        releaser.join()
        holder.close()
    assert released_while_writing == [True]  # it waited for the lock instead of failing
    assert len(history(client, run_id, names.TRAIN_LOSS)) == 10


def test_bulk_read_returns_what_get_metric_history_returns(client):
    from sweeper.reporting.history import load_history

    run_id = client.create_run(client.experiment_id).info.run_id
    log_batch_path(client, run_id, BATCH_1)
    log_batch_path(client, run_id, BATCH_2)
    bulk = SqliteMetrics.for_client(RetryingClient(client))
    keys = [names.TRAIN_LOSS, names.VAL_LOSS, names.VAL_ACCURACY, names.TRAIN_ACCURACY]
    read = bulk.history(run_id, keys)
    assert set(read) == {names.TRAIN_LOSS, names.VAL_LOSS, names.VAL_ACCURACY}  # train/accuracy was never logged
    for key in read:
        mine = sorted((p.step, p.timestamp, "nan" if math.isnan(p.value) else p.value) for p in read[key])
        assert mine == sorted(history(client, run_id, key), key=lambda p: (p[0], p[1], str(p[2]))), key
    assert bulk.history(run_id, []) == {}

    # the sweep summary's curves: the bulk read and MLflow's reader give identical arrays
    run = client.get_run(run_id)
    fast = load_history(client, run)
    slow = load_history(type("NoBulk", (), {"get_metric_history": client.get_metric_history})(), run)
    for name in ("train_loss", "val_steps", "val_loss", "val_accuracy", "train_accuracy"):
        assert np.array_equal(getattr(fast, name), getattr(slow, name), equal_nan=True), name
    assert len(fast.train_loss) == 1500 and fast.train_loss[10] == 7.0  # step 10 logged twice: the later one wins
