"""MLflow tracking for one training run (one Hydra job), through ``MlflowClient`` only.

No fluent ``mlflow.start_run``: its process-global "active run" would block nested runs in a sweep. Per-step losses
are buffered by the core's event seam and written with ``log_batch`` (at most 1000 metrics per call), never one call
per step. Naming contract: see ``RunTracker`` and /tmp/team/contract.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from hydra.errors import CompactHydraException

from .resume import Heartbeat

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAG_VALUE = 5000
# Keys that describe where/how a run is recorded or launched, not what is trained: excluded from the config hash.
HASH_EXCLUDED_KEYS = ("tracking", "hydra", "launcher", "name", "sweep_name")


class TrackingError(CompactHydraException):
    """The tracking store cannot be used (unreachable server, bad URI). Printed without a traceback."""


def outputs_dir() -> Path:
    """<repo>/outputs, from the package location (never the cwd); $MLP_SWEEPS_OUTPUTS overrides it."""
    env = os.environ.get("MLP_SWEEPS_OUTPUTS")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "outputs"


def mask_credentials(text: str) -> str:
    """Hide user:password@ in URIs and token-like query values in any message."""
    text = re.sub(r"(?<=://)[^/@\s]+@", "***@", str(text))
    return re.sub(r"(?i)((?:token|password|secret|key)=)[^&\s]+", r"\1***", text)


def resolve_tracking_uri(uri: str | None) -> str:
    """``tracking.uri`` > $MLFLOW_TRACKING_URI > sqlite:///<outputs>/mlflow.db. Relative sqlite paths are made absolute."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{outputs_dir() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).expanduser().resolve()}"
    elif "://" not in uri:
        raise TrackingError(
            f"tracking.uri={mask_credentials(uri)!r} is not supported: use sqlite:///<absolute path>.db or "
            "http(s)://host:port (the ./mlruns file store is deprecated)"
        )
    return uri


def default_artifact_location(tracking_uri: str, artifact_location: str | None) -> str | None:
    """Artifacts of a local sqlite store live next to it (<dir of the .db>/mlartifacts); servers decide themselves."""
    if artifact_location:
        return artifact_location if "://" in artifact_location else Path(artifact_location).resolve().as_uri()
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts").as_uri()
    return None


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when an http(s) store does not answer (MLflow itself retries for minutes)."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests  # an MLflow dependency; unlike urllib it takes user:password@ from the URI as basic auth

    health = tracking_uri.rstrip("/") + "/health"
    try:
        response = requests.get(health, timeout=timeout)
    except requests.RequestException as exc:
        raise TrackingError(
            f"MLflow tracking server {mask_credentials(tracking_uri)} is unreachable ({type(exc).__name__}); "
            "start it or set tracking.uri / MLFLOW_TRACKING_URI"
        ) from None
    if response.status_code != 200:
        raise TrackingError(
            f"MLflow tracking server {mask_credentials(tracking_uri)} answered GET /health with HTTP "
            f"{response.status_code}; check the URI and credentials"
        )


def get_or_create_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """Experiment id for ``name``; creates it (tolerating a concurrent creator)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def open_store(tracking_cfg: Any) -> tuple[Any, str, str]:
    """(client, tracking_uri, experiment_id); checks reachability first and creates the store/experiment if needed."""
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_cfg.uri)
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    if uri.startswith("sqlite:"):
        from .store import RetryingClient

        client = RetryingClient(client)  # parallel writers retry "database is locked" (see sweeper.store)
    try:
        experiment_id = get_or_create_experiment(
            client, tracking_cfg.experiment_name, default_artifact_location(uri, tracking_cfg.artifact_location)
        )
    except Exception as exc:  # a store that cannot be opened is a setup problem: one clear sentence
        raise TrackingError(f"Cannot open the MLflow store {mask_credentials(uri)}: {mask_credentials(exc)}") from None
    return client, uri, experiment_id


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"model.hidden_sizes": [64], ...} from nested dicts (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def param_value(value: Any) -> str:
    return "null" if value is None else json.dumps(value) if isinstance(value, (list, bool)) else str(value)


def config_hash(container: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the training-relevant config (without tracking/launcher/labels)."""
    canonical = {k: v for k, v in container.items() if k not in HASH_EXCLUDED_KEYS}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def git_commit() -> tuple[str | None, bool]:
    """(commit of the repo the package runs from, dirty?) or (None, False) outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=5,
        ).stdout.strip()
        return commit or None, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, False


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class RunTracker:
    """One MLflow run: params, batched metrics, dataset input, summary, artifacts, terminal status."""

    def __init__(self, client: Any, run_id: str):
        self.client = client
        self.run_id = run_id
        self._timestamp_ms = 0
        self._heartbeat = Heartbeat()

    @classmethod
    def start(cls, client: Any, experiment_id: str, run_name: str, tags: Mapping[str, str],
              parent_run_id: str | None = None) -> "RunTracker":
        tags = dict(tags)
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        return cls(client, run.info.run_id)

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, param_value(v)[:6000]) for k, v in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items() if v is not None]
        for chunk in _chunks(items, 100):
            self.client.log_batch(self.run_id, tags=chunk)

    def log_metrics(self, items: list[tuple]) -> None:
        """(key, value, step) or (key, value, step, timestamp_ms) tuples, at most 1000 per log_batch call."""
        from mlflow.entities import Metric, RunTag

        now = self._now_ms()
        metrics = [Metric(item[0], float(item[1]), item[3] if len(item) > 3 else now, int(item[2])) for item in items]
        # the owner's heartbeat (sweeper.resume) rides along in a batch that is written anyway, at most every 30 s
        tags = [RunTag(k, v) for k, v in self._heartbeat.tags().items()] if self._heartbeat.due() else []
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk, tags=tags)
            tags = []

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
        self.client.log_inputs(
            self.run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", "train+validation")])]
        )

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)
