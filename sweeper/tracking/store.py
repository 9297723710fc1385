"""The tracking store: URI rules, reachability, the one place an ``MlflowClient`` is built, and lock retries.

``open_store`` is what a job or a sweep calls before any work (creates the store and the experiment if needed);
``connect`` is the read-only opening used by reports (never creates a store). Both refuse an unusable store with one
``TrackingError`` sentence that names the URI, credentials masked: ``open_store`` checks the URI, the store file, the
experiment and the artifact location (``store_checks``) before MLflow opens anything, and changes nothing when it
refuses.

On sqlite, writes retry "database is locked" with jittered exponential backoff (``retrying``, ``RetryingClient``):
MLflow waits 20 s per attempt (its own ``PRAGMA busy_timeout``), then fails the call and the data would be lost.
Why retries and not a local server: docs/decisions.md.
"""
from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from .. import names
from ..paths import outputs_dir
from ..redact import mask_credentials
from .store_checks import (
    TrackingError,
    check_artifact_location,
    check_driver,
    check_experiment,
    check_scheme,
    check_sqlite_file,
    not_a_database,
    one_line,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCKED_MARKERS = ("database is locked", "database table is locked", "database is busy", "sqlite_busy")
# SQLite's result codes (prefixes of the extended ones) for a store file that cannot take writes any more
SQLITE_FAULTS = ("SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_FULL", "SQLITE_CORRUPT", "SQLITE_NOTADB")
MLFLOW_SESSION_LOGGER = "mlflow.store.db.utils"  # logs each failed session of MLflow's sqlite store, traceback included
# MlflowClient methods that write to the tracking store; RetryingClient retries these on lock errors.
WRITE_METHODS = frozenset({
    "create_experiment", "create_run", "log_batch", "log_metric", "log_param", "set_tag", "delete_tag",
    "log_inputs", "log_outputs", "set_terminated", "update_run", "delete_run", "restore_run", "set_experiment_tag",
    "log_artifact", "log_artifacts", "log_text", "log_dict", "log_figure",
})
# A dead server is otherwise retried with backoff for minutes (MLflow's defaults); readers give up sooner.
READER_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
# A writer's budget per call (tracking.http_max_retries / http_timeout override it): MLflow's defaults (7 retries,
# 120 s timeout, backoff factor 2) kept a job silent for minutes when the server died; this one gives up in ~35 s.
WRITER_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": 2, "MLFLOW_HTTP_REQUEST_TIMEOUT": 10,
                        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 1}
HTTP_SETTINGS = {"http_max_retries": "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "http_timeout": "MLFLOW_HTTP_REQUEST_TIMEOUT"}
# The experiment's primary metric is the validation loss, lower is better. No mlflow.experimentKind: MLflow 3.17's UI
# never reads it (the layout follows the link's workflowType, see tracking.mlflow_private.views_format).
EXPERIMENT_TAGS = {names.PRIMARY_METRIC: names.VAL_LOSS, names.PRIMARY_METRIC_GREATER_IS_BETTER: "False"}


class StoreBusyError(RuntimeError):
    """The sqlite store stayed locked through every retry."""


# ------------------------------------------------------------------------------------------------------ URI rules

def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite://`` URI (``sqlite:///rel.db``, ``sqlite:////abs.db``, ``?query`` ignored);
    None for other schemes, ``:memory:`` or no path."""
    if not uri.startswith("sqlite:"):
        return None
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    rest = rest[1:] if rest.startswith("/") else rest  # sqlite:///rel.db -> rel.db, sqlite:////abs -> /abs
    rest = rest.split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return Path(rest)


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the app's store ``sqlite:///<outputs>/mlflow.db`` (never cwd-relative)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{outputs_dir() / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None) -> str:
    """``tracking.uri`` > $MLFLOW_TRACKING_URI > sqlite:///<outputs>/mlflow.db. Relative sqlite paths are made absolute
    (a symlink keeps its own name, so that messages name the path the user gave); a URI MLflow would not open, or
    would open as the deprecated file store or an in-memory database, is refused."""
    source = "tracking.uri" if uri else "MLFLOW_TRACKING_URI"
    uri = uri or default_tracking_uri()
    db = sqlite_path(uri)
    if db is not None:
        return f"sqlite:///{os.path.abspath(db.expanduser())}"
    if uri.startswith("sqlite:"):
        raise TrackingError(f"{source}={mask_credentials(uri)!r} names no database file (an in-memory store would "
                            "lose every run): use sqlite:///<absolute path>/mlflow.db")
    check_scheme(uri, source)
    return uri


def default_artifact_location(tracking_uri: str, artifact_location: str | None) -> str | None:
    """Artifacts of a local sqlite store live next to it (<dir of the .db>/mlartifacts); servers decide themselves."""
    if artifact_location:
        return artifact_location if "://" in artifact_location else Path(artifact_location).resolve().as_uri()
    db = sqlite_path(tracking_uri)
    return (db.parent / "mlartifacts").as_uri() if db is not None else None


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training and before MLflow's own retries (minutes), when the store cannot be used: a
    sqlite path that is no database file, a database URI whose driver is missing, a server that does not answer."""
    shown = mask_credentials(tracking_uri)
    db = sqlite_path(tracking_uri)
    if db is not None:
        check_sqlite_file(db, shown)
        return
    if tracking_uri.lower().startswith(DATABASE_SCHEMES):
        check_driver(tracking_uri, shown)
        return
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests  # an MLflow dependency; unlike urllib it takes user:password@ from the URI as basic auth

    health = tracking_uri.rstrip("/") + "/health"
    try:
        response = requests.get(health, timeout=timeout)
    except requests.RequestException as exc:
        raise TrackingError(
            f"MLflow tracking server {shown} is unreachable ({type(exc).__name__}); "
            "start it or set tracking.uri / MLFLOW_TRACKING_URI"
        ) from None
    if response.status_code != 200:
        raise TrackingError(
            f"MLflow tracking server {shown} answered GET /health with HTTP "
            f"{response.status_code}; check the URI and credentials"
        )


# ------------------------------------------------------------------------------------------------------ clients

def client_for(tracking_uri: str) -> Any:
    """The one place an ``MlflowClient`` is built: on sqlite its writes retry lock errors (``RetryingClient``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if not tracking_uri.startswith("sqlite:"):
        return client
    session_log = logging.getLogger(MLFLOW_SESSION_LOGGER)
    if _without_traceback not in session_log.filters:
        session_log.addFilter(_without_traceback)
    return RetryingClient(client)


def _without_traceback(record: logging.LogRecord) -> bool:
    """MLflow logs a failed sqlite session with its traceback, then raises the error, which our callers turn into one
    sentence (or retry, when the store is locked): the logged copy is dropped."""
    return not record.exc_info


def get_or_create_experiment(client: Any, name: str, artifact_location: str | None, shown: str = "",
                             origin: str = "(tracking.artifact_location)", probed: bool = False) -> str:
    """Experiment id for ``name``; creates it (tolerating a concurrent creator).

    Refuses a deleted experiment, and an artifact location (the experiment's own, or ``artifact_location`` for a new
    one unless ``probed`` already) where no file can be written.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        if not probed:
            check_artifact_location(artifact_location, origin)
        try:
            return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)
        except MlflowException:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    check_experiment(experiment, shown)
    check_artifact_location(
        experiment.artifact_location, f"of experiment {name!r} (id {experiment.experiment_id}) in {shown}",
        "make it a writable directory, or set tracking.experiment_name to a new experiment (and "
        "tracking.artifact_location to a writable directory)")
    return experiment.experiment_id


def bound_http_retries(tracking_cfg: Any) -> None:
    """Set MLflow's HTTP retry budget for this process and the workers it starts: ``tracking.http_*`` if set, else the
    environment's, else ``WRITER_HTTP_DEFAULTS``. MLflow reads these variables at every request."""
    for env, default in WRITER_HTTP_DEFAULTS.items():
        os.environ.setdefault(env, str(default))
    for key, env in HTTP_SETTINGS.items():
        setting = tracking_cfg.get(key) if hasattr(tracking_cfg, "get") else getattr(tracking_cfg, key, None)
        if setting is not None:
            os.environ[env] = str(int(setting))


def tag_experiment(client: Any, experiment_id: str) -> None:
    """Give an experiment made by an older release the tags a new one gets (``EXPERIMENT_TAGS``), keeping any a user
    set. Called when a sweep starts, which writes to the store anyway: a refused single run changes nothing."""
    tags = client.get_experiment(experiment_id).tags
    for key, value in EXPERIMENT_TAGS.items():
        if key not in tags:
            client.set_experiment_tag(experiment_id, key, value)


def open_store(tracking_cfg: Any) -> tuple[Any, str, str]:
    """(client, tracking_uri, experiment_id): checks the URI, the store, the experiment and the artifact location, and
    creates the store and the experiment if needed. Any failure is one ``TrackingError`` sentence; a refused launch
    leaves an existing store file byte-identical and creates no new one."""
    uri = resolve_tracking_uri(tracking_cfg.uri)
    shown = mask_credentials(uri)
    bound_http_retries(tracking_cfg)
    location = default_artifact_location(uri, tracking_cfg.artifact_location)
    origin = "(tracking.artifact_location)" if tracking_cfg.artifact_location else f"next to the store {shown}"
    db = sqlite_path(uri)
    try:
        check_reachable(uri)
        new_store = db is not None and (not db.exists() or db.stat().st_size == 0)
        if new_store:  # probe before MLflow creates (or fills) the store file
            check_artifact_location(location, origin)
        client = client_for(uri)
        experiment_id = get_or_create_experiment(client, tracking_cfg.experiment_name, location, shown, origin,
                                                 probed=new_store)
    except TrackingError:
        raise
    except Exception as exc:  # a store that cannot be opened is a setup problem: one clear sentence
        raise TrackingError(f"cannot open the MLflow store {shown}: {one_line(exc)}; check tracking.uri and "
                            "MLFLOW_TRACKING_URI") from None
    return client, uri, experiment_id


def connect(uri: str) -> Any:
    """A client for reading ``uri`` that has answered one request; ``TrackingError`` otherwise.

    A sqlite file that does not exist is an error (opening it would silently create an empty store).
    """
    shown = mask_credentials(uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise TrackingError(f"no MLflow store at {shown}: file {db} does not exist "
                            "(pass --tracking-uri or set MLFLOW_TRACKING_URI)")
    if db is not None:  # MLflow would create its tables in an empty file or a database of another program
        missing = not_a_database(db) if db.is_file() else "not a regular file"
        missing = missing or missing_mlflow_tables(db)
        if missing:
            raise TrackingError(f"{shown} is no MLflow store ({missing}); a report never creates one: pass "
                                "--tracking-uri or set MLFLOW_TRACKING_URI to the store's .db file")
    for key, value in READER_HTTP_ENV.items():
        os.environ.setdefault(key, value)
    try:
        client = client_for(uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot use this store"
        detail = mask_credentials(str(exc).replace(uri, shown)).splitlines()
        raise TrackingError(f"cannot reach the MLflow tracking store {shown}: {type(exc).__name__}: "
                            f"{detail[0] if detail else ''}") from exc
    return client


def missing_mlflow_tables(db: Path) -> str | None:
    """Why the sqlite file ``db`` holds no MLflow store (read over a read-only connection), or None."""
    import contextlib
    import sqlite3

    if db.stat().st_size == 0:
        return "an empty file"
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:  # locked right now, or damaged: MLflow's own open says more
        return None
    return None if {"experiments", "runs"} <= tables else "a database without MLflow's tables"


# ------------------------------------------------------------------------------------------------------ lock retries

def error_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and its causes and contexts, each once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_locked_error(exc: BaseException | None) -> bool:
    """True when ``exc`` (or anything in its cause/context chain) is a sqlite lock/busy OperationalError."""
    return any(any(marker in str(link).lower() for marker in LOCKED_MARKERS) and _is_db_error(link)
               for link in error_chain(exc))


def sqlite_fault(exc: BaseException | None) -> BaseException | None:
    """The sqlite error in ``exc``'s chain that says the store file itself cannot take writes (deleted, replaced, made
    read-only, a failing disk): no retry and no other write path can help. None otherwise."""
    import sqlite3

    return next((link for link in error_chain(exc) if isinstance(link, sqlite3.Error)
                 and str(getattr(link, "sqlite_errorname", "")).startswith(SQLITE_FAULTS)), None)


def store_failure(tracking_uri: str, exc: BaseException) -> str:
    """A failed store call in a few words: for a sqlite store whose file was deleted, replaced or made read-only while
    the run wrote to it, that state (MLflow's error names none of it), else the error's first line."""
    db = sqlite_path(tracking_uri)
    fault = sqlite_fault(exc) if db is not None else None
    if fault is None:
        return one_line(exc)
    if not db.exists():
        state = "was deleted"
    elif fault.sqlite_errorname == "SQLITE_READONLY_DBMOVED":  # the path now names another file
        state = "was replaced or moved"
    elif not os.access(db, os.W_OK) or fault.sqlite_errorname.startswith("SQLITE_READONLY"):
        state = "became read-only"
    else:
        return one_line(fault)
    return f"its file {db} {state} while the run wrote to it: {one_line(fault)}"


def _is_db_error(exc: BaseException) -> bool:
    import sqlite3

    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    # MLflow's managed session wraps OperationalError as TEMPORARILY_UNAVAILABLE (message = the sqlite text).
    return isinstance(exc, (sqlite3.OperationalError, sqlalchemy.exc.OperationalError, MlflowException))


def backoff_delay(attempt: int, base_delay: float, max_delay: float) -> float:
    """Delay before retry number ``attempt`` (0-based): base·2^attempt capped at max_delay, jittered to 50-150 %."""
    return min(max_delay, base_delay * (2 ** attempt)) * random.uniform(0.5, 1.5)


def retrying(fn: Callable[..., T], *args: Any, attempts: int = 8, base_delay: float = 0.05, max_delay: float = 2.0,
             what: str | None = None, on_retry: Callable[[BaseException, int], None] | None = None,
             sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried only while it fails with a sqlite lock error.

    Any other exception propagates at once. After ``attempts`` locked failures, raises ``StoreBusyError`` naming
    ``what``, the attempts and the elapsed time, chained from the last lock error. ``on_retry(exc, attempt)`` is called
    before each sleep (used by the benchmark to count retries). Worst case: each attempt waits MLflow's 20 s busy
    timeout, so 8 attempts give up after about 8 × 20 s + 6 s of backoff.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    label = what or getattr(fn, "__name__", "store call")
    start = time.monotonic()
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_locked_error(exc):
                raise
            if attempt == attempts - 1:
                raise StoreBusyError(
                    f"{label}: the MLflow sqlite store was still locked after {attempts} attempts over "
                    f"{time.monotonic() - start:.1f} s; too many concurrent writers for sqlite - use fewer workers or "
                    "an MLflow server"
                ) from exc
            if on_retry is not None:
                on_retry(exc, attempt)
            delay = backoff_delay(attempt, base_delay, max_delay)
            log.debug("%s: sqlite store locked (attempt %d/%d), retrying in %.2f s", label, attempt + 1, attempts,
                      delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class RetryingClient:
    """An ``MlflowClient`` whose write methods retry sqlite lock errors; reads and everything else pass through."""

    def __init__(self, client: Any, attempts: int = 8, base_delay: float = 0.05, max_delay: float = 2.0,
                 on_retry: Callable[[BaseException, int], None] | None = None):
        self._client = client
        self._options = dict(attempts=attempts, base_delay=base_delay, max_delay=max_delay, on_retry=on_retry)

    @property
    def wrapped(self) -> Any:
        return self._client

    def __getattr__(self, name: str) -> Any:
        # Unpickling (a joblib worker receives the sweep callback that holds this client) looks up __setstate__
        # before _client exists: without this guard self._client recursed into __getattr__ until RecursionError.
        if "_client" not in self.__dict__:
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if name not in WRITE_METHODS or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return retrying(attr, *args, what=name, **self._options, **kwargs)

        call.__name__ = name
        return call
