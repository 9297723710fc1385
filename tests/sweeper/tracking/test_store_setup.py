"""Store set-up errors through the real CLI: one sentence that names the store and what to do, before any data is
loaded or any job of a sweep is launched; exit != 0, no traceback, the store's files byte-identical (none created).

Each case starts ``python -m sweeper`` once (5-10 s of CPU each): single run and sweep are both exercised only for
the corrupt store and the deleted experiment; the other cases use the form they are most likely to meet.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ...reliability.helpers import EXPERIMENT, make_store_with_one_finished_run
from ..sweeper_helpers import ARTIFACTS, run_cli, sqlite_uri

RUN = ["data=digits", "trainer.epochs=1"]
SWEEP = ["-m", *RUN, "model.width=4,8"]
FORMS = {"run": RUN, "sweep": SWEEP}


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file at or under ``path`` (a symlink by its own name) with its bytes; {} when nothing is there."""
    if path.is_dir() and not path.is_symlink():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return {path.name: path.read_bytes()} if path.is_file() else {}


def refused(tmp_path: Path, args: list[str], watched: list[Path], form: str = "run",
            env: dict[str, str] | None = None) -> str:
    """Run the CLI; assert a clean refusal that left ``watched`` byte-identical; return the one ``Error:`` line."""
    before = {str(p): snapshot(p) for p in watched}
    proc = run_cli([*FORMS[form], *args], tmp_path, env_extra=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    assert "retried" not in output, output  # MLflow's engine retry loop (minutes on a bad sqlite path) never ran
    assert "Launching" not in output, output  # no job of a sweep was started
    assert "parameters," not in output, output  # the job's first line after loading the data never came
    trained = [p for p in (tmp_path / "outputs").rglob("*") if p.name in ARTIFACTS]
    assert trained == [], trained
    assert {str(p): snapshot(p) for p in watched} == before
    return errors[0]


def assert_names(line: str, *needles: str) -> None:
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"


@pytest.fixture(scope="module")
def store_template(tmp_path_factory) -> Path:
    """A migrated sqlite store holding experiment mlp-sweeps with one FINISHED run (created once: ~7 s)."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    make_store_with_one_finished_run(db)
    return db


def store_copy(template: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(template, directory / "mlflow.db"))


# ----------------------------------------------------------------------------------------------- the store file

@pytest.mark.integration
@pytest.mark.parametrize("form", ["run", "sweep"])
def test_corrupt_store_is_refused(tmp_path, form):
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    db.write_bytes(os.urandom(8192))
    line = refused(tmp_path, [f"tracking.uri={sqlite_uri(db)}"], [db.parent], form)
    assert_names(line, sqlite_uri(db), "is not an SQLite database", "backup", "tracking.uri")


@pytest.mark.integration
def test_truncated_store_is_refused(tmp_path, store_template):
    db = store_copy(store_template, tmp_path / "store")
    size = db.stat().st_size
    with db.open("r+b") as handle:
        handle.truncate(size // 2)
    line = refused(tmp_path, [f"tracking.uri={sqlite_uri(db)}"], [db.parent])
    assert_names(line, sqlite_uri(db), "is not an SQLite database", f"truncated: {size // 2} of {size} bytes",
                 "backup")


@pytest.mark.integration
def test_symlink_to_a_file_that_is_no_database_is_refused(tmp_path):
    notes = tmp_path / "store" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("not a database\n" * 20)
    (notes.parent / "mlflow.db").symlink_to(notes)
    line = refused(tmp_path, [f"tracking.uri=sqlite:///{notes.parent / 'mlflow.db'}"], [notes.parent])
    assert_names(line, f"sqlite:///{notes.parent / 'mlflow.db'}", f"a symlink to {notes}",
                 "is not an SQLite database")
    assert (notes.parent / "mlflow.db").is_symlink()


@pytest.mark.integration
def test_sqlite_uri_without_a_path_is_refused(tmp_path):
    line = refused(tmp_path, ["tracking.uri=sqlite:///"], [tmp_path / "outputs" / "mlflow.db"])
    assert_names(line, "tracking.uri='sqlite:///'", "names no database file", "sqlite:///<absolute path>/mlflow.db")


@pytest.mark.integration
def test_sqlite_uri_naming_a_directory_is_refused_at_once(tmp_path):
    # Before: MLflow retried opening it for about 2 minutes, then the jobs were launched anyway
    directory = tmp_path / "some" / "dir"
    directory.mkdir(parents=True)
    line = refused(tmp_path, [f"tracking.uri=sqlite:///{directory}"], [directory], "sweep")
    assert_names(line, f"sqlite:///{directory}", "is a directory", f"sqlite:///{directory}/mlflow.db")


@pytest.mark.integration
def test_store_under_a_regular_file_is_refused(tmp_path):
    afile = tmp_path / "x" / "file.txt"
    afile.parent.mkdir()
    afile.write_text("a file\n")
    line = refused(tmp_path, [f"tracking.uri=sqlite:///{afile}/mlflow.db"], [afile.parent])
    assert_names(line, f"sqlite:///{afile}/mlflow.db", f"{afile} is not a directory", "tracking.uri")


# ----------------------------------------------------------------------------------------------- the URI

@pytest.mark.integration
def test_unknown_scheme_is_refused(tmp_path):
    line = refused(tmp_path, ["tracking.uri=foo://bar"], [tmp_path / "outputs" / "mlflow.db"])
    assert_names(line, "tracking.uri='foo://bar'", "unsupported scheme 'foo'", "sqlite:///", "http")


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("psycopg") is not None, reason="psycopg is installed here")
def test_postgresql_without_its_driver_names_the_extra(tmp_path):
    line = refused(tmp_path, ["tracking.uri=postgresql://alice:s3cret@127.0.0.1:5432/mlflow"],
                   [tmp_path / "outputs" / "mlflow.db"])
    assert_names(line, "postgresql://***@127.0.0.1:5432/mlflow", "psycopg", "pip install -e .[postgres]")
    assert "s3cret" not in line


@pytest.mark.integration
def test_file_store_from_the_environment_is_refused(tmp_path):
    mlruns = tmp_path / "old" / "mlruns"
    line = refused(tmp_path, [], [tmp_path / "old", tmp_path / "outputs" / "mlflow.db"],
                   env={"MLFLOW_TRACKING_URI": mlruns.as_uri()})
    assert_names(line, f"MLFLOW_TRACKING_URI='{mlruns.as_uri()}'", "file store", "sqlite:///",
                 "mlflow migrate-filestore")
    assert not mlruns.exists()


# ----------------------------------------------------------------------------------------------- the experiment

@pytest.mark.integration
@pytest.mark.parametrize("form", ["run", "sweep"])
def test_deleted_experiment_is_named_with_the_restore_command(tmp_path, store_template, form):
    from mlflow.tracking import MlflowClient

    db = store_copy(store_template, tmp_path / "store")
    client = MlflowClient(sqlite_uri(db))
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    client.delete_experiment(experiment_id)
    line = refused(tmp_path, [f"tracking.uri={sqlite_uri(db)}"], [db.parent], form)
    assert_names(line, f"experiment '{EXPERIMENT}' (id {experiment_id})", sqlite_uri(db), "is deleted",
                 f"MLFLOW_TRACKING_URI={sqlite_uri(db)} mlflow experiments restore --experiment-id {experiment_id}",
                 "tracking.experiment_name")
    if form == "sweep":
        return
    # the command the message names restores the experiment
    subprocess.run([str(Path(sys.executable).parent / "mlflow"), "experiments", "restore", "--experiment-id",
                    experiment_id], env={**os.environ, "MLFLOW_TRACKING_URI": sqlite_uri(db)}, check=True,
                   capture_output=True, timeout=300)
    assert MlflowClient(sqlite_uri(db)).get_experiment(experiment_id).lifecycle_stage == "active"


# ----------------------------------------------------------------------------------------------- artifacts

@pytest.mark.integration
def test_artifact_location_under_a_regular_file_is_refused_before_the_store_is_created(tmp_path):
    afile = tmp_path / "file.txt"
    afile.write_text("a file\n")
    db = tmp_path / "store" / "mlflow.db"
    line = refused(tmp_path, [f"tracking.uri={sqlite_uri(db)}", f"tracking.artifact_location={afile}/artifacts"],
                   [db.parent, afile])
    assert_names(line, f"{afile.as_uri()}/artifacts", "tracking.artifact_location", f"{afile} is not a directory")


@pytest.mark.integration
def test_default_artifact_location_next_to_the_store_is_probed(tmp_path):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    (store_dir / "mlartifacts").write_text("a file where the artifacts would go\n")
    line = refused(tmp_path, [f"tracking.uri={sqlite_uri(store_dir / 'mlflow.db')}"], [store_dir], "sweep")
    assert_names(line, (store_dir / "mlartifacts").as_uri(), "next to the store", "tracking.artifact_location")


@pytest.mark.integration
@pytest.mark.parametrize("form", ["run", "sweep"])
def test_existing_experiment_with_an_unusable_artifact_location_is_refused(tmp_path, store_template, form):
    db = store_copy(store_template, tmp_path / "store")
    (tmp_path / "gone").write_text("a file now\n")
    location = (tmp_path / "gone" / "mlartifacts").as_uri()
    with sqlite3.connect(db) as conn:  # as if the experiment's artifact directory had been replaced by a file
        conn.execute("UPDATE experiments SET artifact_location = ? WHERE name = ?", (location, EXPERIMENT))
    conn.close()
    line = refused(tmp_path, [f"tracking.uri={sqlite_uri(db)}"], [db.parent], form)
    assert_names(line, location, f"experiment '{EXPERIMENT}'", f"{tmp_path / 'gone'} is not a directory",
                 "tracking.experiment_name")


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_read_only_artifact_location_is_refused(tmp_path):
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    db = tmp_path / "store" / "mlflow.db"
    line = refused(tmp_path, [f"tracking.uri={sqlite_uri(db)}", f"tracking.artifact_location={read_only}"],
                   [db.parent, read_only])
    assert_names(line, read_only.as_uri(), "tracking.artifact_location", f"{read_only} is not writable")


# ----------------------------------------------------------------------------------------------- the checks alone

def test_sqlite_header_check_tells_a_store_from_garbage_and_truncation(tmp_path, store_template):
    from sweeper.tracking.store_checks import not_a_database

    assert not_a_database(store_template) is None
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert not_a_database(empty) is None  # sqlite treats an empty file as a new database
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database\n" * 100)
    assert "no SQLite header" in not_a_database(garbage)
    truncated = store_copy(store_template, tmp_path / "t")
    size = truncated.stat().st_size
    with truncated.open("r+b") as handle:
        handle.truncate(size - 4096)
    assert not_a_database(truncated) == f"truncated: {size - 4096} of {size} bytes"
    short = tmp_path / "short.db"
    short.write_bytes(store_template.read_bytes()[:50])
    assert not_a_database(short) == "truncated: 50 of 100 header bytes"


def test_a_store_that_another_process_is_growing_is_not_taken_for_truncated(tmp_path, store_template):
    """A writer commits the header's new page count before the pages that extend the file: a job that checks the
    store at that moment (population workers and joblib jobs write one store side by side) saw a file shorter than its
    header says. Seen from outside the writer's lock it is the same as a truncated file; the check must not judge it
    while a writer holds the database."""
    import subprocess
    import sys

    from sweeper.tracking.store_checks import not_a_database

    from ...handshake import HANG

    growing = store_copy(store_template, tmp_path / "g")
    size = growing.stat().st_size
    writer = subprocess.Popen(  # another process, as a parallel job is: it holds the writer's lock of a commit
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
         "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.readline()", str(growing)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        with growing.open("r+b") as handle:  # what a reader sees mid-commit: the last page not written yet
            handle.truncate(size - 4096)
        assert not_a_database(growing) is None
    finally:
        writer.communicate("\n", timeout=HANG)
    # once nobody holds it, the same file is what it is: truncated
    assert not_a_database(growing) == f"truncated: {size - 4096} of {size} bytes"


def test_artifact_probe_leaves_nothing_behind(tmp_path):
    from sweeper.tracking.store import TrackingError
    from sweeper.tracking.store_checks import check_artifact_location

    usable = tmp_path / "arts"
    check_artifact_location(usable.as_uri(), "tracking.artifact_location")
    assert usable.is_dir() and list(usable.iterdir()) == []
    check_artifact_location("s3://bucket/prefix", "tracking.artifact_location")  # remote: the server's concern
    (tmp_path / "f").write_text("")
    with pytest.raises(TrackingError, match="is not a directory"):
        check_artifact_location(str(tmp_path / "f" / "arts"), "tracking.artifact_location")
    assert not (tmp_path / "f" / "arts").exists()


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux's /sys, where nobody (root included) may write")
def test_artifact_probe_refuses_a_location_where_even_root_cannot_write():
    from sweeper.tracking.store import TrackingError
    from sweeper.tracking.store_checks import check_artifact_location

    # for root os.access says yes, so this exercises the probe itself: sysfs refuses the mkdir
    expected = (r"^the artifact location /sys/mlp-sweeps-probe \(tracking.artifact_location\) is unusable: "
                r"(/sys is not writable|Operation not permitted)")
    with pytest.raises(TrackingError, match=expected):
        check_artifact_location("/sys/mlp-sweeps-probe", "(tracking.artifact_location)")
    assert not Path("/sys/mlp-sweeps-probe").exists()
