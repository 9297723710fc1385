"""Launchers end to end: joblib and submitit_local sweeps reproduce the basic launcher's histories bit for bit, a
failed job still leaves the comparison artifacts on the parent, a seed sweep is summarised as mean ± std, and the
hydra/launcher presets in conf/ run (parallel) or compose with their knobs (slurm)."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
from sweeper import names

from ..sweeper_helpers import CONF, compose_cfg, run_cli, runs_of, sqlite_uri

from ...handshake import HANG

CURVES = (names.TRAIN_LOSS, names.VAL_LOSS, names.VAL_ACCURACY)
GRID = ["data=digits", "trainer.epochs=2", "model.width=4,8", "trainer.blas_threads=1"]


def sweep(tmp_path: Path, name: str, args: list[str], timeout=HANG):
    """Run `mlp-sweep -m ARGS` into its own store; returns (exit code, stderr, client, parent, children by name)."""
    store = sqlite_uri(tmp_path / name / "mlflow.db")
    (tmp_path / name).mkdir(exist_ok=True)
    proc = run_cli(["-m", *args, f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path / name / 'sweep'}"],
                   tmp_path / name, timeout=timeout)
    client, runs = runs_of(store)
    parents = [r for r in runs if names.PARENT_RUN_ID not in r.data.tags]
    assert len(parents) == 1, proc.stderr
    children = {r.info.run_name: r for r in runs if names.PARENT_RUN_ID in r.data.tags}
    assert len(children) == len(runs) - 1
    assert {c.data.tags[names.PARENT_RUN_ID] for c in children.values()} == {parents[0].info.run_id}
    return proc, client, parents[0], children


def histories(client, run) -> dict[str, list[tuple[int, float]]]:
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)) for key in CURVES}


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    """The grid under the basic launcher, swept once for every launcher compared with it: (client, children by name)."""
    proc, client, _, children = sweep(tmp_path_factory.mktemp("basic"), "basic", GRID)
    assert proc.returncode == 0, proc.stderr
    return client, children


def assert_same_bits_as_basic(tmp_path, launcher_args, basic):
    """The grid under `launcher_args` and under the basic launcher: same runs, same hashes, equal float histories."""
    proc, client, parent, children = sweep(tmp_path, "parallel", [*launcher_args, *GRID])
    assert proc.returncode == 0, proc.stderr
    base_client, base_children = basic
    assert set(children) == set(base_children) == {"width=4 default data=digits epochs=2 blas_threads=1",
                                                   "width=8 default data=digits epochs=2 blas_threads=1"}
    assert parent.info.status == "FINISHED"
    for name, child in children.items():
        base = base_children[name]
        assert child.info.status == base.info.status == "FINISHED"
        assert child.data.tags[names.BLAS_THREADS] == child.data.params[names.BLAS_THREADS_PARAM] == "1"
        assert child.data.tags[names.CONFIG_HASH] == base.data.tags[names.CONFIG_HASH]
        got, expected = histories(client, child), histories(base_client, base)
        assert len(expected[names.TRAIN_LOSS]) == int(base.data.metrics["steps"]) > 0
        for key in CURVES:
            assert [s for s, _ in got[key]] == [s for s, _ in expected[key]], key
            assert [v for _, v in got[key]] == [v for _, v in expected[key]], key  # exact float equality
    # the two widths really differ, so equal histories are not an artefact of reading the same run twice
    widths = [histories(client, children[n])[names.TRAIN_LOSS] for n in sorted(children)]
    assert widths[0] != widths[1]
    return children


@pytest.mark.integration
@pytest.mark.slow
def test_joblib_two_workers_reproduce_the_serial_histories_bit_for_bit(tmp_path, basic):
    assert_same_bits_as_basic(tmp_path, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], basic)


@pytest.mark.integration
@pytest.mark.slow
def test_submitit_local_reproduces_the_serial_histories_bit_for_bit(tmp_path, basic):
    children = assert_same_bits_as_basic(tmp_path, [
        "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1"], basic)
    for child in children.values():  # each job ran in its own submitit process, logging into the sweep dir
        out_dir = Path(child.data.tags[names.OUTPUT_DIR])
        assert (out_dir / "history.csv").is_file()
    assert any((tmp_path / "parallel" / "sweep" / ".submitit").rglob("*_log.out"))


def test_the_sweep_callback_and_its_retrying_client_survive_pickling(tmp_path):
    """joblib pickles Hydra's callbacks (which hold the parent's store client) into every worker."""
    import pickle

    from mlflow.tracking import MlflowClient

    from sweeper.sweep.callbacks import MlflowSweepParent
    from sweeper.tracking.store import RetryingClient

    callback = MlflowSweepParent()
    callback._client = RetryingClient(MlflowClient(sqlite_uri(tmp_path / "mlflow.db")))
    copy = pickle.loads(pickle.dumps(callback))
    assert copy._client.tracking_uri == callback._client.tracking_uri
    assert copy._client.log_batch.__name__ == "log_batch"  # writes still go through the retrying wrapper


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.soak
def test_parallel_sweep_with_a_failed_job_still_summarises_the_parent(tmp_path):
    """3 jobs on 2 joblib workers; job 1 trains, then cannot write its model.npz (a directory is in the way)."""
    (tmp_path / "failing" / "sweep" / "1" / "model.npz").mkdir(parents=True)
    proc, client, parent, children = sweep(tmp_path, "failing", [
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "data=digits", "trainer.epochs=1", "model.width=4,8,16"])
    assert proc.returncode != 0
    assert "IsADirectoryError" in proc.stderr
    statuses = {name: c.info.status for name, c in children.items()}
    assert statuses == {"width=4 default data=digits epochs=1": "FINISHED",
                        "width=8 default data=digits epochs=1": "FAILED",
                        "width=16 default data=digits epochs=1": "FINISHED"}
    assert parent.info.status == "FAILED"
    run_id = parent.info.run_id
    assert {"comparison.png", "summary.csv", "summary.md"} <= {a.path for a in client.list_artifacts(run_id)}
    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "parent-artifacts")))
    rows = list(csv.DictReader(io.StringIO((local / "summary.csv").read_text())))
    assert len(rows) == 3
    assert sorted(r["status"] for r in rows) == ["FAILED", "FINISHED", "FINISHED"]
    (failed,) = [r for r in rows if r["status"] == "FAILED"]
    assert failed["model.width"] == "8"
    assert failed["run_id"] == children["width=8 default data=digits epochs=1"].info.run_id
    assert (local / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "width=8 default data=digits epochs=1" in (local / "summary.md").read_text()
    finished = [r for r in rows if r["status"] == "FINISHED"]
    best = min(finished, key=lambda r: float(r["best_val_loss"]))
    tags = parent.data.tags
    assert tags[names.BEST_CHILD_RUN_ID] == best["run_id"] and tags[names.BEST_CHILD_NAME] == best["run_name"]
    assert float(tags[names.BEST_VAL_LOSS]) == float(best["best_val_loss"])
    assert tags[names.SWEEP_CHILDREN] == "3" and tags[names.SWEEP_CHILDREN_FINISHED] == "2"
    # progress from parallel workers: each job counts the others' outcome files; the one that ended last sees all 3
    logs = "".join((tmp_path / "failing" / "sweep" / str(n) / "app.log").read_text() for n in range(3))
    assert len(re.findall(r"sweep progress: \d/3 done", logs)) == 3
    assert "sweep progress: 3/3 done, 0 reused, 1 failed, all jobs ended" in logs
    # the end-of-sweep table of the launching process lists the failed child, as a plain line on stdout
    assert re.search(r"^8 +600 .* FAILED$", proc.stdout, re.M), proc.stdout[-3000:]


@pytest.mark.integration
@pytest.mark.slow
def test_seed_sweep_groups_children_by_config_without_seed_and_reports_mean_and_std(tmp_path):
    proc, client, parent, children = sweep(tmp_path, "seeds", [
        "data=digits", "trainer.epochs=1", "model.width=4,8", "trainer.seed=0,1"])
    assert proc.returncode == 0, proc.stderr
    assert len(children) == 4
    by_group: dict[str, list] = {}
    for child in children.values():
        by_group.setdefault(child.data.tags[names.CONFIG_HASH_NOSEED], []).append(child)
    assert len(by_group) == 2 and all(len(g) == 2 for g in by_group.values())
    for group in by_group.values():
        assert {c.data.params["model.width"] for c in group} == {group[0].data.params["model.width"]}
        assert {c.data.params["trainer.seed"] for c in group} == {"0", "1"}
        assert len({c.data.tags[names.CONFIG_HASH] for c in group}) == 2

    local = Path(client.download_artifacts(parent.info.run_id, "", str(tmp_path / "parent-artifacts")))
    rows = list(csv.DictReader(io.StringIO((local / "summary.csv").read_text())))
    assert len(rows) == 4
    assert {r["group"] for r in rows} == set(by_group)
    assert {(r["model.width"], r["trainer.seed"]) for r in rows} == {(w, s) for w in "48" for s in "01"}
    md = (local / "summary.md").read_text()
    assert "## Mean ± std over seeds" in md
    for group in by_group.values():
        width = group[0].data.params["model.width"]
        accuracies = np.array([c.data.metrics[names.BEST_VAL_ACCURACY] for c in group])
        assert sorted(float(r["best_val_accuracy"]) for r in rows if r["model.width"] == width) == sorted(accuracies)
        line = next(l for l in md.splitlines() if l.startswith(f"| width={width} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == "2"  # runs in the group
        assert cells[2] == f"{accuracies.mean():.4f} ± {accuracies.std(ddof=1):.4f}"  # best_val_accuracy column
    assert (local / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_slurm_preset_composes_with_its_documented_knobs():
    knobs = ["hydra.launcher.partition=cpu", "hydra.launcher.timeout_min=30", "hydra.launcher.cpus_per_task=4",
             "hydra.launcher.mem_gb=8", "hydra.launcher.array_parallelism=5",
             "+hydra.launcher.additional_parameters.account=my_account"]
    cfg = compose_cfg(["hydra/launcher=slurm", *knobs], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb,
            launcher.array_parallelism) == ("cpu", 30, 4, 8, 5)
    assert launcher.additional_parameters == {"account": "my_account"}
    preset = (CONF / "hydra/launcher/slurm.yaml").read_text()
    for knob in ("partition", "timeout_min", "cpus_per_task", "mem_gb", "array_parallelism", "additional_parameters"):
        assert re.search(rf"^{knob}: .+# \S", preset, re.M), f"{knob} is not documented in slurm.yaml"


@pytest.mark.integration
@pytest.mark.slow
def test_parallel_preset_runs_one_worker_per_core_end_to_end(tmp_path):
    proc, client, parent, children = sweep(tmp_path, "preset", [
        "hydra/launcher=parallel", "data=digits", "trainer.epochs=1", "model.width=4,8"])
    assert proc.returncode == 0, proc.stderr
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert all(c.info.status == "FINISHED" for c in children.values())
    assert "Joblib.Parallel(n_jobs=-1" in proc.stdout + proc.stderr  # the joblib launcher ran the jobs
    # n_jobs=-1 is one worker per core, so each job gets cores / cores = 1 BLAS thread
    assert {c.data.tags[names.BLAS_THREADS] for c in children.values()} == {"1"}
