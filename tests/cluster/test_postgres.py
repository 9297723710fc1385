"""A team store: a real ``mlflow server`` on a PostgreSQL backend with ``--artifacts-destination`` (the recipe of
README "Running on a cluster"), a 2-worker joblib sweep logging to it over HTTP, and the same sweep on sqlite: the
same runs, config hashes and bit-identical histories. And a ``postgresql+psycopg://`` URI without its driver."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from sweeper import names

from ..servers import LocalServer
from ..sweeper.sweep.test_launchers import CURVES, histories
from ..sweeper.sweeper_helpers import ARTIFACTS, run_cli, runs_of, sqlite_uri
from .postgres import LocalPostgres, unavailable_reason

GRID = ["data=digits", "trainer.epochs=2", "model.width=4,8", "trainer.blas_threads=1",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


@pytest.fixture(scope="module")
def postgres():
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="mlp-sweeps-pg-"))  # not pytest's tmp dir: the server runs as user postgres
    server = LocalPostgres(root)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def sweep_children(store: str, tmp_path: Path, name: str):
    (tmp_path / name).mkdir()
    proc = run_cli(["-m", *GRID, f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path / name / 'sweep'}"],
                   tmp_path / name)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = runs_of(store)
    parents = [r for r in runs if r.data.tags.get(names.ROLE) == names.ROLE_SWEEP_PARENT]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    return client, {r.info.run_name: r for r in runs if r not in parents}


@pytest.mark.slow
@pytest.mark.integration
def test_a_joblib_sweep_through_an_mlflow_server_on_postgresql_matches_sqlite(postgres, tmp_path):
    artifacts = tmp_path / "artifacts"
    with LocalServer(postgres.uri, artifacts_destination=str(artifacts), log_path=tmp_path / "server.log",
                     startup_timeout=300) as server:
        client, children = sweep_children(server.uri, tmp_path, "team")
        team = {name: histories(client, run) for name, run in children.items()}
        assert {a.path for a in client.list_artifacts(next(iter(children.values())).info.run_id)} >= ARTIFACTS
    base_client, base_children = sweep_children(sqlite_uri(tmp_path / "mlflow.db"), tmp_path, "solo")
    assert set(children) == set(base_children) and len(children) == 2
    for name, run in children.items():
        base = base_children[name]
        assert run.info.status == base.info.status == "FINISHED"
        assert run.data.tags[names.CONFIG_HASH] == base.data.tags[names.CONFIG_HASH]
        expected = histories(base_client, base)
        for key in CURVES:
            assert team[name][key] == expected[key] and expected[key], key  # same steps, exactly equal floats
    # the artifacts went through the server into --artifacts-destination, not into the job's local dirs
    assert {p.name for p in artifacts.rglob("*") if p.is_file()} >= ARTIFACTS


@pytest.mark.integration
def test_a_postgresql_uri_without_its_driver_is_one_line_naming_the_extra(tmp_path):
    hidden = tmp_path / "no_driver"
    hidden.mkdir()  # a psycopg that cannot be imported, as where `pip install -e .[postgres]` was never run
    (hidden / "psycopg.py").write_text("raise ImportError('No module named psycopg', name='psycopg')\n")
    proc = run_cli(["tracking.uri=postgresql+psycopg://alice:s3cret@127.0.0.1:1/mlflow", "data=digits"], tmp_path,
                   env_extra={"PYTHONPATH": str(hidden)})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-3000:]
    assert "psycopg" in lines[0] and "pip install -e .[postgres]" in lines[0] and "s3cret" not in lines[0]
    assert not (tmp_path / "outputs" / "runs").exists() or not any((tmp_path / "outputs" / "runs").rglob("*.npz"))
