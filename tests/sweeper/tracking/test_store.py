"""sweeper.tracking.store: the retry helper (unit tests) and 4 concurrent writers on one real sqlite store (integration)."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time

import pytest
import sqlalchemy.exc
from mlflow.exceptions import ErrorCode, MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from sweeper.tracking.store import RetryingClient, StoreBusyError, is_locked_error, retrying
from sweeper import names

from ...handshake import HANG

WORKERS, STEPS, VAL_POINTS = 4, 2000, 20
SUMMARY = (names.NUM_PARAMETERS, names.BEST_VAL_LOSS, names.BEST_VAL_ACCURACY, names.FINAL_VAL_ACCURACY, names.FINAL_VAL_LOSS, "epochs",
           names.TRAIN_SECONDS)


def mlflow_locked_error(message="database is locked") -> MlflowException:
    """The exception MLflow's managed session raises for a busy sqlite store (mlflow/store/db/utils.py)."""
    try:
        try:
            raise sqlite3.OperationalError(message)
        except sqlite3.OperationalError as raw:
            raise sqlalchemy.exc.OperationalError("INSERT INTO metrics ...", {}, raw) from raw
    except sqlalchemy.exc.OperationalError as wrapped:
        try:
            raise MlflowException(message=wrapped, error_code=TEMPORARILY_UNAVAILABLE) from wrapped
        except MlflowException as exc:
            return exc


class Flaky:
    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return ("ok", args, kwargs)


def test_is_locked_error_recognises_mlflow_and_raw_sqlite_errors(tmp_path):
    assert is_locked_error(mlflow_locked_error())
    assert is_locked_error(mlflow_locked_error("database table is locked"))
    assert ErrorCode.Name(TEMPORARILY_UNAVAILABLE) == mlflow_locked_error().error_code
    # a real lock: one connection holds an exclusive lock, another with no busy timeout tries to write
    db = tmp_path / "x.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")
    other = sqlite3.connect(db, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as info:
        other.execute("insert into t values (1)")
    holder.execute("rollback")
    assert is_locked_error(info.value)
    assert not is_locked_error(MlflowException("Run 'abc' not found"))
    assert not is_locked_error(ValueError("database is locked"))  # not a database error
    assert not is_locked_error(sqlite3.OperationalError("no such table: metrics"))


def test_retrying_retries_a_locked_error_then_succeeds():
    fn = Flaky([mlflow_locked_error(), mlflow_locked_error("database table is locked")])
    sleeps, retries = [], []
    result = retrying(fn, 1, key="v", attempts=5, base_delay=0.01, sleep=sleeps.append,
                      on_retry=lambda exc, attempt: retries.append(attempt))
    assert result == ("ok", (1,), {"key": "v"})
    assert fn.calls == 3 and retries == [0, 1] and len(sleeps) == 2
    assert 0.005 <= sleeps[0] <= 0.015 and 0.01 <= sleeps[1] <= 0.03  # jittered exponential backoff


def test_retrying_does_not_retry_other_errors():
    for error in (MlflowException("Run 'abc' not found"), ValueError("bad"),
                  MlflowException("deadlock", error_code=TEMPORARILY_UNAVAILABLE)):
        fn = Flaky([error])
        with pytest.raises(type(error)) as info:
            retrying(fn, attempts=5, sleep=lambda s: None)
        assert info.value is error and fn.calls == 1


def test_retrying_gives_up_after_n_attempts_with_a_clear_error():
    fn = Flaky([mlflow_locked_error() for _ in range(10)])
    sleeps = []
    with pytest.raises(StoreBusyError) as info:
        retrying(fn, attempts=4, base_delay=0.01, max_delay=0.02, what="log_batch", sleep=sleeps.append)
    assert fn.calls == 4 and len(sleeps) == 3 and max(sleeps) <= 0.03
    message = str(info.value)
    assert "log_batch" in message and "4 attempts" in message and "locked" in message
    assert is_locked_error(info.value.__cause__)
    with pytest.raises(ValueError):
        retrying(fn, attempts=0)


def test_retrying_client_wraps_writes_only():
    class Fake:
        def __init__(self):
            self.log_batch = Flaky([mlflow_locked_error()])
            self.get_run = Flaky([mlflow_locked_error()])

    client = RetryingClient(Fake(), base_delay=0.001)
    assert client.log_batch("run", metrics=[])[0] == "ok"
    assert client.wrapped.log_batch.calls == 2
    with pytest.raises(MlflowException):  # reads are not retried
        client.get_run("run")


# ----------------------------------------------------------------------------------------------------------------------
# 4 processes, one sqlite store
# ----------------------------------------------------------------------------------------------------------------------

def _writer(uri, experiment_id, parent_id, worker, barrier, queue, path):
    """One training-shaped run through RetryingClient; reports failures instead of raising.

    path "bulk": metrics through RunTracker.log_metrics as the app writes them (sweeper.tracking.mlflow_private inserts);
    "log_batch": MLflow's log_batch.
    """
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        from sweeper.tracking.run import RunTracker

        retries = [0]
        client = RetryingClient(MlflowClient(tracking_uri=uri),
                                on_retry=lambda exc, attempt: retries.__setitem__(0, retries[0] + 1))
        client.get_experiment(experiment_id)
        barrier.wait(timeout=HANG)  # every writer has started (spawn + imports)
        run_id = client.create_run(experiment_id, run_name=f"w{worker}",
                                   tags={names.PARENT_RUN_ID: parent_id}).info.run_id
        client.log_batch(run_id, params=[Param(f"p.{i}", str(i)) for i in range(30)])
        client.log_batch(run_id, tags=[RunTag(names.CONFIG_HASH, str(worker)), RunTag(names.STOP_REASON, "max_epochs")])
        ts, per_point = int(time.time() * 1000), STEPS // VAL_POINTS
        tracker = RunTracker(client, run_id)
        assert tracker.bulk_writer is not None

        def log(points):
            if path == "bulk":
                tracker.log_metrics(points)
            else:
                client.log_batch(run_id, metrics=[Metric(k, v, t, s) for k, v, s, t in points])
        for p in range(VAL_POINTS):
            steps = range(p * per_point, (p + 1) * per_point)
            log([(names.TRAIN_LOSS, worker + 1 / (s + 1), s, ts) for s in steps])
            log([(k, 0.5, steps[-1], ts) for k in (names.TRAIN_ACCURACY, names.VAL_LOSS, names.VAL_ACCURACY)])
        log([(k, 1.0, 0, ts) for k in SUMMARY])
        if path == "bulk":
            assert tracker.bulk_writer is not None  # it never fell back to log_batch
        client.set_terminated(run_id, "FINISHED")
        queue.put(("ok", worker, run_id, retries[0]))
    except BaseException as exc:
        queue.put(("error", worker, f"{type(exc).__name__}: {exc}", is_locked_error(exc)))


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.soak
@pytest.mark.parametrize("path", ["bulk", "log_batch"])
def test_four_concurrent_writers_lose_nothing(store, tmp_path, path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)  # create + migrate the store in the launching process
    experiment_id = client.create_experiment("concurrency", artifact_location=(tmp_path / "art").as_uri())
    parent_id = client.create_run(experiment_id, run_name="parent").info.run_id

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(store, experiment_id, parent_id, w, barrier, queue, path))
             for w in range(WORKERS)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=HANG) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    failures = [r for r in results if r[0] == "error"]
    assert not failures, f"writers failed (message, locked?): {failures}"

    runs = {r[2]: r[1] for r in results}
    assert len(runs) == WORKERS
    per_point = STEPS // VAL_POINTS
    for run_id, worker in runs.items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags[names.PARENT_RUN_ID] == parent_id and len(run.data.params) == 30
        history = client.get_metric_history(run_id, names.TRAIN_LOSS)
        assert sorted(m.step for m in history) == list(range(STEPS))
        assert all(m.value == pytest.approx(worker + 1 / (m.step + 1)) for m in history)
        for key in (names.TRAIN_ACCURACY, names.VAL_LOSS, names.VAL_ACCURACY):
            assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [
                (p + 1) * per_point - 1 for p in range(VAL_POINTS)]
        for key in SUMMARY:
            assert len(client.get_metric_history(run_id, key)) == 1
