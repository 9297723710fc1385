"""hydra/launcher=population end to end: members are recorded like solo jobs, match the basic launcher to float32
rounding, carry engine=population(K) and their own config hash; a job left out of every group runs solo, bit for bit;
a relaunch skips what FINISHED and a rerun of the same engine is bit-identical."""
from __future__ import annotations

import os

import numpy as np
import pytest
from sweeper import names
from sweeper.launchers import cpu_cores
from sweeper.sweep.population import plan

from ..sweeper_helpers import ARTIFACTS, REPO, run_cli, runs_of, sqlite_uri
from .test_launchers import CURVES, histories, sweep

# 5 jobs of one shape; max_members=2 splits them evenly in launch order: populations of 2, a solo job, 2 again.
GRID = ["data=digits", "trainer.epochs=2", "optimizer.lr=0.1,0.2,0.3,0.4,0.5", "trainer.blas_threads=1"]
POPULATION = ["hydra/launcher=population", "hydra.launcher.max_members=2"]
HOOK = REPO / "tests" / "sweeper" / "population_hook"


@pytest.mark.integration
@pytest.mark.slow
def test_population_sweep_is_recorded_like_solo_jobs_and_reruns_bit_identically(tmp_path):
    proc, client, parent, children = sweep(tmp_path, "population", [*POPULATION, *GRID])
    assert proc.returncode == 0, proc.stderr
    base_proc, base_client, _, base_children = sweep(tmp_path, "basic", GRID)
    assert base_proc.returncode == 0, base_proc.stderr
    assert set(children) == set(base_children) and len(children) == 5
    assert parent.info.status == "FINISHED"
    engines = sorted(c.data.tags.get(names.ENGINE, "solo") for c in children.values())
    assert engines == ["population(2)"] * 4 + ["solo"]
    for name, child in children.items():
        base = base_children[name]
        assert child.info.status == "FINISHED" and child.data.tags[names.STOP_REASON] == "max_epochs"
        params, base_params = (
            {k: v for k, v in r.data.params.items() if k != "tracking.uri"} for r in (child, base)  # two stores
        )
        assert params == base_params and len(params) > 20
        assert {a.path for a in client.list_artifacts(child.info.run_id)} == ARTIFACTS
        assert child.data.metrics[names.STEPS] == base.data.metrics[names.STEPS]
        got, expected = histories(client, child), histories(base_client, base)
        for key in CURVES:
            assert [s for s, _ in got[key]] == [s for s, _ in expected[key]], key
            np.testing.assert_allclose([v for _, v in got[key]], [v for _, v in expected[key]], rtol=1e-5)
        if names.ENGINE in child.data.tags:  # a member: another engine, so another hash
            assert child.data.tags[names.CONFIG_HASH] != base.data.tags[names.CONFIG_HASH]
        else:  # the solo job: the basic launcher's hash and bits
            assert child.data.tags[names.CONFIG_HASH] == base.data.tags[names.CONFIG_HASH]
            assert got == expected

    # a relaunch skips every FINISHED config: no new child runs
    again = run_cli(["-m", *POPULATION, *GRID, f"tracking.uri={client.tracking_uri}",
                     f"hydra.sweep.dir={tmp_path / 'again'}"], tmp_path / "population")
    assert again.returncode == 0, again.stderr
    assert (again.stdout + again.stderr).count("skipped, config_hash") == 5
    # the same engine rerun (skip_finished off) reproduces every history bit for bit
    _, client2, _, rerun = sweep(tmp_path, "rerun", [*POPULATION, *GRID, "tracking.skip_finished=false"])
    for name, child in children.items():
        assert rerun[name].data.tags[names.CONFIG_HASH] == child.data.tags[names.CONFIG_HASH]
        assert histories(client2, rerun[name]) == histories(client, child)


def test_plan_groups_equal_keys_in_launch_order_and_splits_them_for_members_and_workers():
    assert plan(["a", None, "b", "a", "b"], max_members=16) == [[0, 3], [1], [2, 4]]
    assert plan(["a"] * 5, max_members=2) == [[0, 1], [2], [3, 4]]
    assert plan(["a"] * 16, max_members=16, n_workers=2) == [list(range(8)), list(range(8, 16))]
    # as many groups as workers already keep every worker busy: no group is split into solo jobs
    assert plan(["a", "b", "a", "b"], max_members=16, n_workers=2) == [[0, 2], [1, 3]]
    assert plan(["a", "b", "c", "a"], max_members=16, n_workers=4) == [[0], [3], [1], [2]]
    # jobs that draw the same batches (their shuffle key: the seed) share a chunk, in launch order within it
    seeds = [0, 1] * 4
    assert plan(["a"] * 8, max_members=16, n_workers=2, orders=seeds) == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert plan(["a", "b", "a", "b"], max_members=1, orders=[1, 0, 0, 0]) == [[0], [2], [1], [3]]


def test_n_workers_defaults_to_one_worker_per_core():
    from sweeper.launchers import workers_for
    from sweeper.sweep.launcher_checks import check_knobs

    check_knobs(16, None)  # the launcher's default: accepted
    assert workers_for(None, cores=2) == 2 and workers_for(None, cores=8) == 8 and workers_for(3, cores=2) == 3


@pytest.mark.parametrize("knob, value", [("max_members", "0"), ("n_workers", "-1"), ("n_workers", "two")])
def test_bad_knobs_are_refused_in_one_sentence_before_any_run(tmp_path, knob, value):
    proc = run_cli(["-m", "data=digits", "optimizer.lr=0.1,0.2", "hydra/launcher=population",
                    f"hydra.launcher.{knob}={value}", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"], tmp_path)
    assert proc.returncode == 1
    if value == "two":  # the typed launcher config refuses it while composing
        assert "n_workers" in proc.stderr and "Traceback" not in proc.stderr
    else:
        more = " (or null: one per core)" if knob == "n_workers" else ""
        assert proc.stderr.strip().splitlines()[-1] == (
            f"Error: hydra.launcher.{knob} must be an integer >= 1{more}, got {value}")
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_during_a_population_marks_every_member_killed_with_its_metrics(tmp_path, workers):
    """Ctrl-C once the members' first metrics are in the store, with the populations in the launching process or in
    two worker processes (two populations of two); the wait for the exit only bounds a hang."""
    import os
    import signal
    import subprocess

    from ...handshake import HANG, catches_sigint, default_sigint, store_count, wait_for
    from ...reliability.helpers import cli_command, cli_env
    from ..sweeper_helpers import runs_of, sqlite_uri

    db = tmp_path / "mlflow.db"
    args = ["-m", "data=digits", "trainer.epochs=100000", "trainer.early_stopping.enabled=false",
            "optimizer.lr=" + ",".join(["0.1", "0.2", "0.3", "0.4"][: 2 * workers]), "hydra/launcher=population",
            f"hydra.launcher.n_workers={workers}", f"tracking.uri={sqlite_uri(db)}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    with (tmp_path / "stderr.log").open("w") as stderr:
        proc = subprocess.Popen(cli_command(args), cwd=tmp_path, env=cli_env(tmp_path / "outputs"),
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                preexec_fn=default_sigint)
    try:
        wait_for(lambda: store_count(db, RUNS_WITH_LOSSES) == 2 * workers, "train/loss rows of every member", proc=proc)
        assert catches_sigint(proc.pid), "the app does not handle SIGINT"
        if workers == 1:
            proc.send_signal(signal.SIGINT)
        else:  # a terminal's Ctrl-C reaches the whole foreground process group, the workers too
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = (tmp_path / "stderr.log").read_text()
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    assert "interrupted by Ctrl-C" in err and "Traceback" not in err
    client, runs = runs_of(sqlite_uri(db))
    members = [r for r in runs if names.PARENT_RUN_ID in r.data.tags]
    assert len(members) == 2 * workers and all(r.data.tags[names.ENGINE] == "population(2)" for r in members)
    for run in members:
        assert run.info.status == "KILLED" and run.data.tags[names.ERROR].startswith("KeyboardInterrupt")
        history = client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)
        assert sorted(m.step for m in history) == list(range(len(history))) and history  # a gap-free prefix
    (parent,) = [r for r in runs if names.PARENT_RUN_ID not in r.data.tags]
    assert parent.info.status == "KILLED"


RUNS_WITH_LOSSES = "SELECT COUNT(DISTINCT run_uuid) FROM metrics WHERE key = 'train/loss'"


@pytest.mark.integration
@pytest.mark.slow
def test_a_member_whose_set_up_fails_counts_as_failed_in_the_sweep_progress(tmp_path):
    """The member of lr 0.2 fails after the launcher grouped it with the others (tests/sweeper/population_hook)."""
    hook = {"PYTHONPATH": os.pathsep.join(p for p in (str(HOOK), os.environ.get("PYTHONPATH", "")) if p),
            "MLP_SWEEPS_FAIL_SETUP": "optimizer.lr=0.2"}
    store = sqlite_uri(tmp_path / "m.db")
    proc = run_cli(["-m", *POPULATION[:1], "hydra.launcher.n_workers=1", "data=digits", "trainer.epochs=1",
                    "optimizer.lr=0.1,0.2,0.3", "trainer.blas_threads=1", f"tracking.uri={store}",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path, env_extra=hook)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "injected set-up failure" in out, out[-3000:]
    assert "population of 3 job(s)" in out  # the failing member was grouped with the others
    assert "sweep progress: 3/3 done, 0 reused, 1 failed, all jobs ended" in out, out[-3000:]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(cpu_cores() < 2, reason="one core: one BLAS thread whatever the workers")
def test_blas_threads_are_the_cores_over_the_workers_that_start(tmp_path):
    """n_workers=2, but one job: one worker starts, and it gets every core."""
    store = sqlite_uri(tmp_path / "m.db")
    proc = run_cli(["-m", *POPULATION[:1], "hydra.launcher.n_workers=2", "data=digits", "trainer.epochs=1",
                    "model.width=4", f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = runs_of(store)
    (child,) = [r for r in runs if names.PARENT_RUN_ID in r.data.tags]
    assert child.data.tags[names.BLAS_THREADS] == str(cpu_cores())
