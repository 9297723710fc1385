"""Can this tracking store be used? Checks that run before MLflow opens anything, each refusing with one sentence.

Every check raises ``TrackingError`` naming the store (credentials masked) and what to do. They run in the launching
process before any job of a sweep starts and again in each job before its data is loaded, and they change nothing:
MLflow itself would retry an unopenable sqlite path for about two minutes and then fail with a traceback, and an
artifact location it cannot write fails only after training, when the run's files are logged.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import sqlite3
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from hydra.errors import CompactHydraException

from ..paths import unwritable_reason
from ..redact import mask_credentials

SUPPORTED_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
USE_INSTEAD = ("use sqlite:///<absolute path>/mlflow.db, http(s)://host:port (an MLflow server) or "
               "postgresql+psycopg://user@host/db")
DATABASES = {"postgresql": "PostgreSQL", "mysql": "MySQL", "mssql": "SQL Server"}
SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
NOT_A_DATABASE_FIX = ("restore it from a backup, move it aside to start a new store, or set tracking.uri to the "
                      "store's .db file")


class TrackingError(CompactHydraException):
    """The tracking store cannot be used (unreachable server, bad URI). Printed without a traceback."""


def check_scheme(uri: str, source: str) -> None:
    """Refuse a URI MLflow would not open, or would open as the deprecated file store; ``source`` names where it came
    from (tracking.uri or MLFLOW_TRACKING_URI)."""
    shown = f"{source}={mask_credentials(uri)!r}"
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("", "file"):
        path = local_path(uri) or Path(uri)
        if path.suffix == ".db":
            raise TrackingError(f"{shown} is a path, not a URI: use sqlite:///{os.path.abspath(path)}")
        raise TrackingError(
            f"{shown} is the deprecated MLflow file store, which MLflow refuses since 3.13: use a sqlite store such as "
            f"sqlite:///<absolute path>/mlflow.db (`mlflow migrate-filestore --source {os.path.abspath(path)} "
            "--target sqlite:///<absolute path>/mlflow.db` copies its runs into one)")
    if scheme.split("+", 1)[0] not in SUPPORTED_SCHEMES:
        raise TrackingError(f"{shown} has an unsupported scheme {scheme!r}: {USE_INSTEAD}")


def check_sqlite_file(db: Path, shown: str) -> None:
    """A sqlite store path must be a database file (or nothing yet, in a directory where one can be created)."""
    if db.is_dir():
        raise TrackingError(f"the MLflow store {shown} is a directory, not a database file: "
                            f"use sqlite:///{db / 'mlflow.db'}")
    link = f" (a symlink to {os.path.realpath(db)})" if db.is_symlink() else ""
    if not db.exists():
        if link:
            raise TrackingError(f"the MLflow store {shown}{link} points to nothing: fix the link or set tracking.uri "
                                "to the store's .db file")
        why = unwritable_reason(db.parent)
        if why is not None:
            raise TrackingError(f"cannot create the MLflow store {shown}: {why}; set tracking.uri to a file in a "
                                "writable directory")
        return
    if not db.is_file():
        raise TrackingError(f"the MLflow store {shown}{link} is not a regular file: {NOT_A_DATABASE_FIX}")
    if not os.access(db, os.R_OK | os.W_OK):
        raise TrackingError(f"the MLflow store {shown}{link} is not readable and writable by this user: change its "
                            "permissions or set tracking.uri to another store")
    reason = not_a_database(db)
    if reason is not None:
        raise TrackingError(f"the MLflow store {shown}{link} is not an SQLite database ({reason}): "
                            f"{NOT_A_DATABASE_FIX}")
    why = unwritable_reason(Path(os.path.realpath(db)).parent)
    if why is not None:  # sqlite writes its journal next to the database file
        raise TrackingError(f"the MLflow store {shown}{link} cannot be written: {why} (SQLite keeps its journal "
                            "there); make the directory writable or set tracking.uri to another store")


def not_a_database(db: Path) -> str | None:
    """Why the file ``db`` is no SQLite database (no header, truncated, corrupt), or None if it looks like one.

    An empty file is a new database to SQLite. Reads the 100-byte header, compares the file size with the page count
    the header records and, for a rollback-journal database, lists its schema over a read-only connection (on a WAL
    database even a read-only connection would create the -wal and -shm files, so MLflow's own open tells then).
    """
    size = db.stat().st_size
    if size == 0:
        return None
    with db.open("rb") as handle:
        header = handle.read(HEADER_SIZE)
    if not header.startswith(SQLITE_MAGIC[:len(header)]):
        return "no SQLite header"
    if len(header) < HEADER_SIZE:
        return f"truncated: {len(header)} of {HEADER_SIZE} header bytes"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"invalid page size {page_size} in the header"
    pages = int.from_bytes(header[28:32], "big")
    size_is_valid = pages > 0 and header[24:28] == header[92:96]  # the header's page count is current
    wal = db.with_name(db.name + "-wal")
    if size_is_valid and size < pages * page_size and not (wal.exists() and wal.stat().st_size):
        if _short_under_lock(db):
            return f"truncated: {size} of {pages * page_size} bytes"
    if header[18] == 2:  # WAL mode
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:  # locked, or a hot journal only a writer can roll back: not corruption
        return None
    except sqlite3.DatabaseError as exc:  # file is not a database, database disk image is malformed
        return str(exc)
    return None


def _short_under_lock(db: Path) -> bool:
    """The file is shorter than its header says, under SQLite's shared lock too. Without the lock, a writer in another
    process (a parallel job) may have written the header's new page count and not yet the pages that extend the file:
    a growing database, not a truncated one. False when it cannot tell (a writer holds the lock right now)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True,
                                                isolation_level=None)) as conn:
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # holds the shared lock until ROLLBACK
            with db.open("rb") as handle:
                header = handle.read(HEADER_SIZE)
                size = os.fstat(handle.fileno()).st_size
            conn.execute("ROLLBACK")
    except sqlite3.OperationalError:  # locked by a writer right now: not corruption
        return False
    except sqlite3.DatabaseError:  # unreadable as well as short
        return True
    page_size = int.from_bytes(header[16:18], "big")
    return size < int.from_bytes(header[28:32], "big") * (65536 if page_size == 1 else page_size)


def check_driver(uri: str, shown: str) -> None:
    """A database URI (postgresql, mysql, mssql) needs its SQLAlchemy driver installed; MLflow would fail late."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(uri)
        dialect = url.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise TrackingError(f"the MLflow store {shown} is not a database URI SQLAlchemy knows "
                            f"({mask_credentials(exc)}): {USE_INSTEAD}") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        backend, driver = url.get_backend_name(), exc.name or url.get_driver_name()
        fix = f"install the Python package that provides {driver}"
        if backend == "postgresql":
            fix = "pip install -e .[postgres]" + ("" if driver == "psycopg" else
                                                   " (psycopg 3) and write the URI as postgresql+psycopg://...")
        raise TrackingError(f"the MLflow store {shown} needs the {DATABASES.get(backend, backend)} driver {driver}, "
                            f"which is not installed here: {fix}") from None


def check_experiment(experiment: Any, shown: str) -> None:
    """A deleted experiment keeps its name (MLflow's trash): runs cannot be created in it until it is restored."""
    if getattr(experiment, "lifecycle_stage", "active") != "deleted":
        return
    experiment_id = experiment.experiment_id
    raise TrackingError(
        f"experiment {experiment.name!r} (id {experiment_id}) in {shown} is deleted (moved to the trash in the "
        f"MLflow UI): restore it with `MLFLOW_TRACKING_URI={shlex.quote(shown)} mlflow experiments restore "
        f"--experiment-id {experiment_id}`, or set tracking.experiment_name to another name")


def local_path(location: str) -> Path | None:
    """The directory of a ``file://`` URI or a plain path; None for remote locations (s3://, mlflow-artifacts:/)."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    return Path(location).expanduser() if not parsed.scheme else None


def check_artifact_location(location: str | None, origin: str,
                            fix: str = "set tracking.artifact_location to a writable directory") -> None:
    """Create a local artifact directory if needed and write and delete a probe file in it.

    ``origin`` says where the location comes from, e.g. "(tracking.artifact_location)". Remote locations are the
    server's concern and are not probed.
    """
    path = local_path(location) if location else None
    if path is None:
        return
    why = unwritable_reason(path)
    if why is None:
        probe = path / f".mlp-sweeps-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            why = f"{exc.strerror or exc} ({type(exc).__name__})"
    if why is not None:
        raise TrackingError(f"the artifact location {mask_credentials(location)} {origin} is unusable: {why}; {fix}")


@contextlib.contextmanager
def store_step(uri: str, what: str) -> Any:
    """``with store_step(uri, "creating the run"):`` turns any store failure inside into one ``TrackingError``."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(f"the MLflow store {mask_credentials(uri)} failed while {what} ({one_line(exc)}); check "
                            "the store, then relaunch the same command") from None


def one_line(exc: BaseException) -> str:
    """``Type: first line`` of an error from MLflow or SQLAlchemy (which append the SQL and a link on more lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return mask_credentials(f"{type(exc).__name__}: {first}")
