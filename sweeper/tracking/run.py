"""One MLflow run of one job: ``RunTracker`` (params, batched metrics, dataset input, artifacts, terminal status) and
``MetricSink``, which receives mlp_core's events and buffers their metrics for the tracker.

No fluent ``mlflow.start_run``: its process-global "active run" would block nested runs in a sweep.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

from mlp_core import TrainLosses, ValidationPoint

from .. import names, signals
from ..redact import mask_credentials
from .background import MetricWriter, MetricWriterError
from .liveness import Heartbeat
from .writes import chunks, write_metrics

log = logging.getLogger(__name__)

MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_TAG_VALUE = 5000
MAX_PARAM_VALUE = 6000
# MetricSink flushes when this many points are waiting or this many seconds passed (a killed run keeps its history).
FLUSH_METRICS = 1000
FLUSH_SECONDS = 10.0


def param_value(value: Any) -> str:
    return "null" if value is None else json.dumps(value) if isinstance(value, (list, bool)) else str(value)


class RunTracker:
    """One MLflow run: params, batched metrics, dataset input, summary, artifacts, terminal status.

    With ``background_metrics=True`` (``tracking.background_metrics=true``) metrics go through a ``MetricWriter``
    process started with the run; ``end`` drains it before the terminal status is set. Without it, ``log_metrics``
    writes itself: through ``bulk_writer`` (``sweeper.tracking.sqlite_bulk.SqliteMetrics``) on MLflow's sqlite store,
    with ``log_batch`` otherwise or once the bulk path has failed.
    """

    def __init__(self, client: Any, run_id: str, metric_writer: MetricWriter | None = None):
        from .sqlite_bulk import SqliteMetrics

        self.client = client
        self.run_id = run_id
        self.metric_writer = metric_writer
        # sqlite stores: bulk inserts (sqlite_bulk), ~10x cheaper than log_batch; None -> log_batch
        self.bulk_writer = SqliteMetrics.for_client(client) if metric_writer is None else None
        self._timestamp_ms = 0
        self._heartbeat = Heartbeat()

    @classmethod
    def start(cls, client: Any, experiment_id: str, run_name: str, tags: Mapping[str, str],
              parent_run_id: str | None = None, background_metrics: bool = False) -> "RunTracker":
        tags = dict(tags)
        if parent_run_id:
            tags[names.PARENT_RUN_ID] = parent_run_id
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        return cls.attach(client, run.info.run_id, background_metrics)

    @classmethod
    def attach(cls, client: Any, run_id: str, background_metrics: bool = False) -> "RunTracker":
        """The tracker of an existing RUNNING run (a job's claim, ``sweeper.tracking.claims``)."""
        return cls(client, run_id, MetricWriter(client.tracking_uri, run_id) if background_metrics else None)

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, param_value(v)[:MAX_PARAM_VALUE]) for k, v in params.items()]
        for chunk in chunks(items, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items() if v is not None]
        for chunk in chunks(items, MAX_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=chunk)

    def log_metrics(self, items: list[tuple]) -> None:
        """(key, value, step) or (key, value, step, timestamp_ms) tuples: one bulk insert, or log_batch calls of 1000."""
        now = self._now_ms()
        points = [(k, float(v), int(s), t[0] if t else now) for k, v, s, *t in items]
        # the owner's heartbeat (liveness) goes with a flush, at most every 30 s
        heartbeat = list(self._heartbeat.tags().items()) if self._heartbeat.due() else []
        if self.metric_writer is not None:
            self.metric_writer.send(points, heartbeat)
            return
        with signals.Deferred():
            self.bulk_writer = write_metrics(self.client, self.run_id, points, heartbeat, self.bulk_writer)

    def log_dataset(self, dataset: Any) -> None:
        """The dataset as a run input: name, split, digest (and where it came from)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        profile = {
            "split": dataset.split,
            "num_train": int(len(dataset.train.y)),
            "num_val": int(len(dataset.val.y)),
            "num_test": None if dataset.test is None else int(len(dataset.test.y)),
            "input_dim": int(dataset.input_dim),
            "mean": float(dataset.mean),
            "std": float(dataset.std),
        }
        entity = Dataset(
            name=f"{dataset.name}-{dataset.split}",
            digest=str(dataset.digest)[:36],
            source_type="mlp_core",
            source=json.dumps({"source": mask_credentials(dataset.source)}),
            profile=json.dumps(profile),
        )
        inputs = [DatasetInput(entity, tags=[InputTag(names.DATASET_CONTEXT, "train+validation")])]
        try:
            self.client.log_inputs(self.run_id, datasets=inputs)
        except Exception as exc:
            # Parallel jobs of one sweep insert the same dataset row at the same moment; the loser's transaction fails
            # on the unique constraint (and is rolled back). The row exists now, so one more call links it to the run.
            # sqlite says "UNIQUE constraint failed"; PostgreSQL (through a server) "UniqueViolation ... duplicate key"
            if not any(sign in f"{exc!r} {exc}" for sign in ("UNIQUE constraint", "IntegrityError", "UniqueViolation",
                                                           "duplicate key value")):
                raise
            self.client.log_inputs(self.run_id, datasets=inputs)

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str = "FINISHED") -> None:
        """Drain the metric writer, then set the terminal status.

        If the writer failed, this raises ``MetricWriterError`` and leaves the run open: the caller's error path then
        tags the error and calls ``end("FAILED")`` (the writer is gone by then, so that call only sets the status).
        """
        writer, self.metric_writer = self.metric_writer, None
        if writer is not None:
            writer.close()
        with signals.Deferred():
            self.client.set_terminated(self.run_id, status)


class MetricSink:
    """Receives mlp_core's events: buffers metrics for the tracker and drives the progress bar.

    Metrics keep the wall-clock time of their event; they are written when FLUSH_METRICS are waiting or FLUSH_SECONDS
    have passed, so a run costs about steps / 1000 store writes and a killed run keeps most of its history. A write
    that fails (or that a second Ctrl-C interrupts) spills its points to ``run_dir`` (``sweeper.tracking.spill``)
    and sets ``store_failed``: the job then ends without another store call, which would wait out the retries again.
    """

    def __init__(self, tracker: RunTracker | None, progress: Any = None, run_dir: Path | None = None):
        # progress: a tqdm-like bar (update, set_postfix, close) or None
        self.tracker = tracker
        self.progress = progress
        self.run_dir = run_dir
        self.store_failed = False
        self.buffer: list[tuple[str, float, int, int]] = []
        self.last_flush = time.monotonic()

    def __call__(self, event: Any) -> None:
        now_ms = int(time.time() * 1000)
        if isinstance(event, TrainLosses):
            if self.progress is not None:
                self.progress.update(len(event.steps))
            if self.tracker is not None:
                self.buffer.extend(
                    (names.TRAIN_LOSS, v, s, now_ms) for s, v in zip(event.steps.tolist(), event.losses.tolist())
                )
        elif isinstance(event, ValidationPoint):
            if self.progress is not None:
                # a refresh per validation point (5 per epoch) is cheap and shows the new accuracy at once
                self.progress.set_postfix(epoch=event.epoch, step=event.step, val_acc=f"{event.val_accuracy:.4f}")
            if self.tracker is not None:
                self.buffer += [
                    (names.TRAIN_ACCURACY, float(event.train_accuracy), event.step, now_ms),
                    (names.VAL_LOSS, float(event.val_loss), event.step, now_ms),
                    (names.VAL_ACCURACY, float(event.val_accuracy), event.step, now_ms),
                ]
        if len(self.buffer) >= FLUSH_METRICS or time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.tracker is not None and self.buffer and not self.store_failed:
            try:
                self.tracker.log_metrics(self.buffer)
            except MetricWriterError as exc:
                self._write_unwritten(exc)
            except (Exception, signals.WriteInterrupted) as exc:  # not a held interrupt raised after the write
                self._spill(exc)
                raise
        self.buffer = []
        self.last_flush = time.monotonic()

    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (``RunTracker.end``); when the background writer failed while draining, the
        points it did not confirm are written here first (or spilled, see ``_write_unwritten``). If the store fails
        at the FINISHED status itself, that status is spilled (``mlp-sweep-replay`` sets it), so a relaunch after the
        replay reuses the run instead of marking it KILLED and training it again."""
        finish = {"tags": {}, "artifacts": [], "status": status} if status == "FINISHED" else None
        try:
            try:
                self.tracker.end(status)
            except MetricWriterError as exc:
                self._write_unwritten(exc, finish)
                self.tracker.end(status)  # the writer is gone: this only sets the status
        except (Exception, signals.WriteInterrupted) as exc:
            if self.store_failed or finish is None:  # spilled already (the writer's points), or not FINISHED
                raise
            self._spill(exc, finish)
            raise

    def _write_unwritten(self, exc: MetricWriterError, finish: dict | None = None) -> None:
        """The background writer failed or died: the points it did not confirm, then the buffer, are written from
        this process (the run writes inline from now on); if the store fails too, they are spilled like any failed
        write (``_spill``: one ``StoreUnavailable`` sentence naming the file and ``mlp-sweep-replay``). A point the
        writer wrote without confirming it is written again as the same row, which the store keeps once."""
        from .sqlite_bulk import SqliteMetrics

        tracker = self.tracker
        tracker.metric_writer = None
        points = [*exc.unwritten, *self.buffer]
        self.buffer = []
        log.warning("%s; run %s writes its %d unconfirmed metric points itself, and its metrics from now on",
                    exc, tracker.run_id, len(points))
        try:
            with signals.Deferred():
                tracker.bulk_writer = write_metrics(tracker.client, tracker.run_id, points, [],
                                                    SqliteMetrics.for_client(tracker.client))
        except (Exception, signals.WriteInterrupted) as write_exc:
            self.buffer = points
            self._spill(write_exc, finish)
            raise

    def log_summary(self, metrics: list[tuple], tags: Mapping[str, str], paths: list[Path]) -> None:
        """After training: the summary metrics, tags and artifact files. If the store fails here, they are spilled
        with the run's end status FINISHED (training did complete): ``mlp-sweep-replay`` writes them all."""
        tracker = self.tracker
        if tracker is None:
            return
        now = int(time.time() * 1000)  # stamped once: a replay then recognises points that did reach the store
        points = [(key, value, step, now) for key, value, step in metrics]
        finish = {"tags": dict(tags), "artifacts": [str(p) for p in paths], "status": "FINISHED"}
        try:
            try:
                tracker.log_metrics(points)
            except MetricWriterError as exc:  # the writer's unconfirmed points, then these, written here (or spilled)
                self.buffer = points
                self._write_unwritten(exc, finish)
            tracker.set_tags(tags)
            for path in paths:
                tracker.log_artifact(path)
        except (Exception, signals.WriteInterrupted) as exc:
            if self.store_failed:  # spilled already, with what the writer had not confirmed
                raise
            self.buffer = points
            self._spill(exc, finish)
            raise

    def _spill(self, exc: BaseException, finish: dict | None = None) -> None:
        """Save the unwritten points (and ``finish``: what the end of the run still has to write); a store error
        becomes ``StoreUnavailable`` (raised from here), an interrupt is re-raised by the caller."""
        from .spill import spill, unavailable

        self.store_failed = True
        if self.run_dir is None:
            return
        tracker, points = self.tracker, self.buffer
        self.buffer = []
        path = spill(self.run_dir, tracker.run_id, tracker.client.tracking_uri, points, exc, finish)
        error = unavailable(path, tracker.run_id, tracker.client.tracking_uri, len(points), exc, finish)
        if not isinstance(exc, Exception):
            log.warning("%s", error)
            return
        raise error from None
