"""One MLflow run of one job: ``RunTracker`` (params, batched metrics, dataset input, artifacts, terminal status) and
``MetricSink``, which receives mlp_core's events and buffers their metrics for the tracker.

No fluent ``mlflow.start_run``: its process-global "active run" would block nested runs in a sweep.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from mlp_core import TrainLosses, ValidationPoint

from .. import names, signals
from ..redact import mask_credentials
from .background import MetricWriter, MetricWriterError
from .liveness import Heartbeat
from .mlflow_private.sqlite_metrics import SqliteMetrics
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

    The tracker owns where metric points go. With ``background_metrics=True`` (``tracking.background_metrics=true``)
    they go through a ``MetricWriter`` process started with the run, which ``end`` drains before the terminal status
    is set; otherwise ``log_metrics`` writes them itself, through ``bulk_writer`` (``SqliteMetrics``) on MLflow's
    sqlite store, with ``log_batch`` elsewhere or once the bulk path has failed. When the writer fails or dies, the
    tracker switches itself to inline writes and writes the points the writer did not confirm first. A write that
    fails leaves its points in ``take_unwritten()`` for the caller to spill; nothing is retried behind its back.
    """

    def __init__(self, client: Any, run_id: str, metric_writer: MetricWriter | None = None):
        self.client = client
        self.run_id = run_id
        self.metric_writer = metric_writer
        # sqlite stores: bulk inserts, ~10x cheaper than log_batch; None -> log_batch
        self.bulk_writer = SqliteMetrics.for_client(client) if metric_writer is None else None
        self._unwritten: list[tuple] = []
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
        """(key, value, step) or (key, value, step, timestamp_ms) tuples: to the writer, or one bulk insert, or
        log_batch calls of 1000. A failed write raises the store's error (or ``signals.WriteInterrupted``) and leaves
        its points, the failed writer's unconfirmed ones first, in ``take_unwritten()``."""
        now = self._now_ms()
        points = [(k, float(v), int(s), t[0] if t else now) for k, v, s, *t in items]
        # the owner's heartbeat (liveness) goes with a flush, at most every 30 s
        heartbeat = list(self._heartbeat.tags().items()) if self._heartbeat.due() else []
        if self.metric_writer is not None:
            try:
                self.metric_writer.send(points, heartbeat)
                return
            except MetricWriterError as exc:
                points = self._inline_after(exc) + points
        self._write(points, heartbeat)

    def take_unwritten(self) -> list[tuple]:
        """The points of the last failed metric write (oldest first), handed over once; [] after a good write."""
        points, self._unwritten = self._unwritten, []
        return points

    def _inline_after(self, exc: MetricWriterError) -> list[tuple]:
        """The writer failed or died: this process writes the run's metrics from now on. Returns the points the writer
        did not confirm; one it wrote without confirming is written again as the same row, which the store keeps
        once."""
        self.metric_writer = None
        self.bulk_writer = SqliteMetrics.for_client(self.client)
        log.warning("%s; run %s writes its %d unconfirmed metric points itself, and its metrics from now on",
                    exc, self.run_id, len(exc.unwritten))
        return list(exc.unwritten)

    def _write(self, points: list[tuple], tags: list[tuple[str, str]]) -> None:
        self._unwritten = []
        try:
            with signals.Deferred():
                self.bulk_writer = write_metrics(self.client, self.run_id, points, tags, self.bulk_writer)
        except (Exception, signals.WriteInterrupted):  # not a held interrupt raised after the write
            self._unwritten = points
            raise

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
        """Drain the metric writer (if it failed, write what it did not confirm), then set the terminal status.

        A failed write raises as ``log_metrics`` does and leaves the run open for the caller's error path."""
        writer, self.metric_writer = self.metric_writer, None
        if writer is not None:
            try:
                writer.close()
            except MetricWriterError as exc:
                self._write(self._inline_after(exc), [])
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
        points, self.buffer = self.buffer, []
        if self.tracker is not None and points and not self.store_failed:
            self._guarded(lambda: self.tracker.log_metrics(points))
        self.last_flush = time.monotonic()

    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (``RunTracker.end``). If the store fails at the FINISHED status itself, that
        status is spilled (``mlp-sweep-replay`` sets it), so a relaunch after the replay reuses the run instead of
        marking it KILLED and training it again."""
        finish = {"tags": {}, "artifacts": [], "status": status} if status == "FINISHED" else None
        self._guarded(lambda: self.tracker.end(status), finish)

    def log_summary(self, metrics: list[tuple], tags: Mapping[str, str], paths: list[Path]) -> None:
        """After training: the summary metrics, tags and artifact files. If the store fails here, they are spilled
        with the run's end status FINISHED (training did complete): ``mlp-sweep-replay`` writes them all."""
        tracker = self.tracker
        if tracker is None:
            return
        now = int(time.time() * 1000)  # stamped once: a replay then recognises points that did reach the store
        points = [(key, value, step, now) for key, value, step in metrics]
        finish = {"tags": dict(tags), "artifacts": [str(p) for p in paths], "status": "FINISHED"}

        def tags_and_files() -> None:
            tracker.set_tags(tags)
            for path in paths:
                tracker.log_artifact(path)

        self._guarded(lambda: tracker.log_metrics(points), finish)
        self._guarded(tags_and_files, finish, stored=points)

    def _guarded(self, write: Callable[[], None], finish: dict | None = None, stored: list[tuple] = ()) -> None:
        """``write()``, the one place a store failure meets the spill policy: when it fails (or a second Ctrl-C cuts
        it), the points the tracker could not write, then ``stored`` (points of this step already in the store, which
        the replay recognises), and ``finish`` (what the end of the run still has to write) are spilled, and the job
        ends without another store call, which would wait out the retries again. With nothing to save, the error
        propagates as it is."""
        try:
            write()
        except (Exception, signals.WriteInterrupted) as exc:  # not a held interrupt raised after the write
            points = [*self.tracker.take_unwritten(), *stored]
            if points or finish is not None:
                self._spill(exc, points, finish)
            raise

    def _spill(self, exc: BaseException, points: list[tuple], finish: dict | None) -> None:
        """Save ``points`` and ``finish`` to the run dir's spill file and set ``store_failed``; a store error becomes
        ``StoreUnavailable`` (raised from here), an interrupt is re-raised by the caller."""
        from .spill import spill, unavailable

        self.store_failed = True
        if self.run_dir is None:
            return
        tracker = self.tracker
        path = spill(self.run_dir, tracker.run_id, tracker.client.tracking_uri, points, exc, finish)
        error = unavailable(path, tracker.run_id, tracker.client.tracking_uri, len(points), exc, finish)
        if not isinstance(exc, Exception):
            log.warning("%s", error)
            return
        raise error from None
