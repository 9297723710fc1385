"""A sqlite store whose file is made read-only or deleted while a job writes to it: the job ends with one line that
says so, its unsaved metrics spilled as for a dead server, and ``mlp-sweep-replay`` finishes the run once the file is
writable (or restored) again.

Root writes through any permission bits, so "read-only" is the immutable attribute (``chattr +i``), which stops root
too; "deleted" unlinks the file after the test kept a hard link to it, the backup it restores before the replay. The
test acts once the child's first train/loss points are in the store (its signal), never after a guessed sleep.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeper import names
from sweeper.tracking.spill import read_spill

from ...handshake import store_count, wait_for
from ..sweeper_helpers import sqlite_uri
from .test_remote_failures import REPLAY, cli_env, one_error_line, start_job, wait_bounded

FIRST_POINTS = f"SELECT COUNT(*) FROM metrics WHERE key = '{names.TRAIN_LOSS}'"


def immutable(path: Path, on: bool) -> bool:
    return subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("fault, said", [("read-only", "became read-only"), ("deleted", "was deleted")])
def test_a_sqlite_store_failing_mid_run_is_one_line_and_the_replay_finishes_the_run(tmp_path, migrated_db, fault,
                                                                                    said):
    db = tmp_path / "mlflow.db"
    shutil.copy(migrated_db, db)
    if fault == "read-only" and not (immutable(db, True) and immutable(db, False)):
        pytest.skip("chattr +i is not available on this filesystem")
    proc, log = start_job(tmp_path, ["data=digits", "trainer.epochs=100000", "trainer.early_stopping.enabled=false",
                                     f"tracking.uri={sqlite_uri(db)}"])
    try:
        wait_for(lambda: store_count(db, FIRST_POINTS), "the run's first train/loss points in the store", proc=proc)
        if fault == "read-only":
            assert immutable(db, True)
        else:
            os.link(db, tmp_path / "backup.db")
            db.unlink()
        wait_bounded(proc, log)
    finally:
        if fault == "read-only":
            immutable(db, False)
    assert proc.returncode == 1
    line = one_error_line(log)
    assert f"its file {db} {said} while the run wrote to it" in line and "failed during training" in line, line
    run_dir = Path(re.search(r"`mlp-sweep-replay (\S+)`", line).group(1))
    header, spilled, skipped = read_spill(run_dir / names.SPILL_FILE)
    assert spilled and not skipped and said in header["error"]

    if fault == "deleted":
        assert not db.exists()  # nothing re-created an empty store in its place
        os.replace(tmp_path / "backup.db", db)  # restored from the backup
    replayed = subprocess.run([*REPLAY, str(run_dir)], capture_output=True, text=True, timeout=600,
                              env=cli_env(tmp_path))
    assert replayed.returncode == 0 and "the run is FAILED" in replayed.stdout, replayed.stdout + replayed.stderr
    client = MlflowClient(sqlite_uri(db))
    run = client.get_run(header["run_id"])
    assert run.info.status == "FAILED" and run.data.tags[names.ERROR] == header["error"]
    steps = sorted(m.step for m in client.get_metric_history(header["run_id"], names.TRAIN_LOSS))
    last = max(step for key, _, step, _ in spilled if key == names.TRAIN_LOSS)
    assert steps == list(range(last + 1))  # every step trained is there once: nothing lost, nothing doubled
