"""A spill file the job did not finish writing (killed while spilling): ``mlp-sweep-replay`` replays every complete
point into a real sqlite store and names the lines it skipped; an empty file, or one without a whole header, is one
sentence and changes nothing. A later spill never writes onto a torn line."""
from __future__ import annotations

import json
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from sweeper import names
from sweeper.tracking.spill import read_spill, spill

from .test_remote_failures import REPLAY, cli_env


@pytest.fixture
def run(store, tmp_path):
    """(client, run id, run dir) of a RUNNING run whose store failed during training."""
    client = MlflowClient(store)
    experiment_id = client.create_experiment("spill", artifact_location=(tmp_path / "art").as_uri())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return client, client.create_run(experiment_id).info.run_id, run_dir


def header(client, run_id):
    return json.dumps({"run_id": run_id, "tracking_uri": client.tracking_uri, "error": "OSError: disk gone"})


def points(steps):
    return [json.dumps([names.TRAIN_LOSS, 1.0 / (step + 1), step, 1_700_000_000_000 + step]) for step in steps]


def replay(tmp_path, run_dir):
    done = subprocess.run([*REPLAY, str(run_dir)], capture_output=True, text=True, timeout=600, env=cli_env(tmp_path))
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def test_a_torn_last_line_is_skipped_and_named_and_the_rest_is_replayed(run, tmp_path):
    client, run_id, run_dir = run
    torn = points([3])[0][:-7]  # the job was killed in the middle of its last point
    (run_dir / names.SPILL_FILE).write_text("\n".join([header(client, run_id), *points(range(3)), torn]))
    done = replay(tmp_path, run_dir)
    assert done.returncode == 0, done.stderr
    assert "3 metric points uploaded" in done.stdout and "the run is FAILED" in done.stdout, done.stdout
    assert f"skipped 1 incomplete line(s) of {run_dir / names.SPILL_FILE} (line 5)" in done.stdout, done.stdout
    assert sorted(m.step for m in client.get_metric_history(run_id, names.TRAIN_LOSS)) == [0, 1, 2]
    assert client.get_run(run_id).info.status == "FAILED"


@pytest.mark.parametrize("content, state", [("", "is empty"), ('{"run_id": "ab', "has no complete header line")],
                         ids=["empty", "torn header"])
def test_a_spill_without_a_whole_header_is_one_sentence_and_changes_nothing(run, tmp_path, content, state):
    client, run_id, run_dir = run
    (run_dir / names.SPILL_FILE).write_text(content)
    done = replay(tmp_path, run_dir)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and state in done.stderr and "nothing can be replayed" in done.stderr
    assert client.get_run(run_id).info.status == "RUNNING"  # the run waits for a later launch to mark it KILLED
    assert (run_dir / names.SPILL_FILE).read_text() == content


def test_a_spill_after_a_torn_line_starts_on_a_line_of_its_own(run):
    client, run_id, run_dir = run
    (run_dir / names.SPILL_FILE).write_text("\n".join([header(client, run_id), *points([0]), points([1])[0][:-3]]))
    spill(run_dir, run_id, client.tracking_uri, [(names.TRAIN_LOSS, 0.25, 2, 7)], OSError("disk gone"))
    spilled = read_spill(run_dir / names.SPILL_FILE)
    assert [step for _, _, step, _ in spilled.points] == [0, 2] and spilled.skipped == [3]
