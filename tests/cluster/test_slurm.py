"""A sweep on a real Slurm cluster (tests/cluster/slurm.py: one node, started by the session fixture) with
``hydra/launcher=slurm``, the preset README "Running on a cluster" documents.

A preemption: one job, certainly RUNNING (tests/sweeper/hold_hook stops it after its first metric flush), gets SIGTERM
through ``scancel --signal=TERM``. Its run ends KILLED with the signal named, submitit checkpoints and Slurm requeues the
job, and the requeued job trains the config to the end: the sweep completes with exactly one FINISHED run per config.

A time limit: a held job meets its real ``--time``. Slurm sends submitit's SIGUSR2 ``signal_delay_s`` before it, the
run ends KILLED with its metrics, and the job is requeued exactly ``max_num_timeout`` times; then the sweep ends with
the reason instead of waiting forever for a job that is over.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper import names

from ..handshake import HANG, wait_for
from ..sweeper.sweeper_helpers import runs_of, sqlite_uri
from .slurm import SlurmCluster

HOLD_HOOK = Path(__file__).resolve().parents[1] / "sweeper" / "hold_hook"
WIDTHS = ("4", "8", "16", "32")
HELD = "16"  # the config that is preempted: array task 2 of the sweep's job array


def sweep_command(tmp_path: Path, widths: tuple[str, ...] = WIDTHS, timeout_min: int = 30, *launcher: str) -> list[str]:
    return [sys.executable, "-m", "sweeper", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=cpu",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", f"hydra.launcher.timeout_min={timeout_min}",
            *launcher, "data=digits", "trainer.epochs=2", f"model.width={','.join(widths)}",
            f"tracking.uri={sqlite_uri(tmp_path / 'mlflow.db')}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]


def sweep_env(cluster, tmp_path: Path, **hold: str) -> dict[str, str]:
    """The cluster's environment for the sweep, with the hold hook ahead of the inherited PYTHONPATH (which names the
    checkout under test; sbatch passes the environment on to the jobs)."""
    env = {k: v for k, v in cluster.env.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env.update(MLP_SWEEPS_OUTPUTS=str(tmp_path / "outputs"), MLP_SWEEPS_OFFLINE="1", MLP_SWEEPS_HOLD_WIDTHS=HELD,
               PYTHONPATH=os.pathsep.join(filter(None, [str(HOLD_HOOK), os.environ.get("PYTHONPATH")])), **hold)
    return env


def job_logs(tmp_path: Path, suffix: str = "*") -> str:
    """submitit's logs of the sweep's jobs (stdout and stderr, or ``suffix`` "err" or "out"), without its sacct warnings
    (there is no accounting here)."""
    text = "\n".join(p.read_text(errors="replace") for p in sorted((tmp_path / "sweep").rglob(f"*_log.{suffix}")))
    return "\n".join(line for line in text.splitlines() if SlurmCluster.sacct_warning not in line)


def run_sweep(cluster, tmp_path: Path, command: list[str], during=lambda proc: None, **hold: str):
    """Run the sweep to its end, calling ``during(proc)`` while it runs: (exit code, its stderr without submitit's
    sacct warnings, what ``during`` returned). A sweep still running after HANG s fails the test, never hangs it."""
    proc = subprocess.Popen(command, cwd=tmp_path, env=sweep_env(cluster, tmp_path, **hold), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        seen = during(proc)
        _, stderr = proc.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the sweep still runs after {HANG:.0f} s; its jobs' logs:\n{job_logs(tmp_path)[-6000:]}\n"
                             f"{cluster._run('scontrol', 'show', 'job', '--oneliner').stdout}\n{cluster.logs()}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    shown = "\n".join(line for line in stderr.splitlines() if cluster.sacct_warning not in line)
    return proc.returncode, shown, seen


def held_run_is_training(store: str, held_dir: Path):
    """The held job's run once it is RUNNING with train/loss points in the store (its signal that it is under way)."""
    if not (held_dir / "held").exists():
        return None
    _, runs = runs_of(store)
    for run in runs:
        if run.info.status == "RUNNING" and run.data.params.get("model.width") == HELD \
                and names.TRAIN_LOSS in run.data.metrics:
            return run
    return None


def array_task(cluster, index: int) -> str:
    """``<array job id>_<index>`` of the sweep's job array, once Slurm runs that task."""
    out = cluster._run("squeue", "-h", "-o", "%F %K %T").stdout
    for line in out.splitlines():
        job, task, state = line.split()
        if task == str(index) and state == "RUNNING":
            return f"{job}_{task}"
    return ""


def jobs(cluster, *job: str) -> list[dict[str, str]]:
    """``scontrol show job`` of ``job`` (or of every job Slurm still remembers: MinJobAge), one dict per job."""
    out = cluster._run("scontrol", "show", "job", "--oneliner", *job).stdout
    return [dict(item.split("=", 1) for item in line.split() if "=" in item) for line in out.splitlines()]


def sweep_jobs(cluster, tmp_path: Path) -> list[dict[str, str]]:
    """The Slurm jobs of the sweep launched from ``tmp_path`` (their WorkDir)."""
    return [job for job in jobs(cluster) if job.get("WorkDir") == str(tmp_path)]


def requeued_state(cluster, task: str) -> str:
    """PENDING or RUNNING once Slurm has requeued the task (Restarts >= 1), else "" (not yet, or still REQUEUED)."""
    fields = next(iter(jobs(cluster, task)), {})
    state = fields.get("JobState", "")
    return state if int(fields.get("Restarts", "0")) >= 1 and state in ("PENDING", "RUNNING") else ""


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.integration
@pytest.mark.parametrize("preempt", [
    ["scancel", "--signal=TERM"],  # SIGTERM only: the job asks submitit to requeue it
    ["scontrol", "requeue"],       # what preemption with PreemptMode=REQUEUE does: Slurm sends SIGTERM and requeues
], ids=["scancel-TERM", "scontrol-requeue"])
def test_a_slurm_sweep_survives_a_preempted_job_with_one_finished_run_per_config(slurm_cluster, tmp_path, preempt):
    store = sqlite_uri(tmp_path / "mlflow.db")

    def preempt_the_held_job(proc):
        held = wait_for(lambda: held_run_is_training(store, tmp_path), "the held job's train/loss points", proc=proc,
                        poll=0.5)
        task = wait_for(lambda: array_task(slurm_cluster, WIDTHS.index(HELD)), "the held job in squeue", proc=proc)
        result = slurm_cluster._run(*preempt, task)
        assert result.returncode == 0, result.stderr
        # Slurm holds a requeued job back for cred_expire seconds (10 here, 120 by default), until the old job's
        # credential has expired: forcing it to start sooner gets it killed as "Job credential revoked", and without
        # accounting submitit would wait for it forever
        wait_for(lambda: requeued_state(slurm_cluster, task), "Slurm requeueing the preempted job", proc=proc)
        return held

    code, shown, held = run_sweep(slurm_cluster, tmp_path, sweep_command(tmp_path), preempt_the_held_job,
                                  MLP_SWEEPS_HOLD_ONCE=str(tmp_path))
    assert code == 0, f"{shown[-3000:]}\n{job_logs(tmp_path, 'err')[-6000:]}\n{slurm_cluster.logs()}"
    assert "Traceback" not in shown, shown[-3000:]

    client, runs = runs_of(store)
    parents = [r for r in runs if r.data.tags.get(names.ROLE) == names.ROLE_SWEEP_PARENT]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert sorted(r.data.params["model.width"] for r in finished) == sorted(WIDTHS)  # one per config
    assert len({r.data.tags[names.CONFIG_HASH] for r in finished}) == len(WIDTHS)
    (killed,) = [r for r in children if r.info.status != "FINISHED"]
    assert killed.info.run_id == held.info.run_id and killed.info.status == "KILLED"
    assert "SIGTERM" in killed.data.tags[names.KILLED_REASON]
    assert client.get_metric_history(killed.info.run_id, names.TRAIN_LOSS)  # what it logged before the signal
    rerun = next(r for r in finished if r.data.params["model.width"] == HELD)
    assert rerun.data.tags[names.CONFIG_HASH] == killed.data.tags[names.CONFIG_HASH]
    assert rerun.data.tags[names.PARENT_RUN_ID] == parents[0].info.run_id
    logs = job_logs(tmp_path)
    # the job itself asked for the requeue after a bare SIGTERM; after `scontrol requeue` Slurm did, and the job left it
    assert ("Requeued job" in logs) == (preempt[0] == "scancel"), logs[-3000:]


# A job's time limit and submitit's warning before it. slurmctld looks at time limits every 30 s (PERIODIC_TIMEOUT, not
# configurable) and sends the --signal warning at the first look when the time left is under signal_delay_s + 30 s
# (measured here: with --time=1 and signal_delay_s=30 the SIGUSR2 came 17-25 s after the start), so the warning
# comes (limit - delay - 30 s) to (limit - delay) after the start, always a look before the limit itself. A job
# took 32 s from its start to its first metrics at load 5 here: two minutes and a delay of 20 s give the job at
# least 70 s to be training when the SIGUSR2 comes, and a look that a busy slurmctld makes up to 20 s late still
# comes before the limit (with a delay of 1 s, a run of the suite on two xdist workers once saw no SIGUSR2 at all:
# Slurm's SIGTERM at the limit came first). submitit counts any SIGUSR2 of a job this short as a time-out (its
# "guaranteed" time, min(80 %, limit - 10 min), is below zero), as it does for a long job warned near its end.
TIME_LIMIT_MIN = 2
SIGNAL_DELAY_S = 20


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_a_job_at_its_time_limit_ends_killed_with_its_metrics_and_is_requeued_as_max_num_timeout_says(slurm_cluster,
                                                                                                       tmp_path):
    """One job that holds on every attempt, ``max_num_timeout=1``: its first run ends KILLED by SIGUSR2 with its
    metrics and the job is requeued; its second run ends the same way and is not requeued ("timed-out too many
    times"). The job then ends with that error as its result, so the sweep ends (exit 1, the reason shown) instead of
    waiting forever for a result file that an escaping interrupt never wrote (Slurm here has no accounting)."""
    store = sqlite_uri(tmp_path / "mlflow.db")
    command = sweep_command(tmp_path, (HELD,), TIME_LIMIT_MIN, f"hydra.launcher.signal_delay_s={SIGNAL_DELAY_S}",
                            "hydra.launcher.max_num_timeout=1")
    code, shown, _ = run_sweep(slurm_cluster, tmp_path, command)
    logs = job_logs(tmp_path)
    assert code == 1, f"{shown[-3000:]}\n{logs[-6000:]}\n{slurm_cluster.logs()}"
    assert "timed-out too many times" in shown, shown[-3000:]

    (job,) = sweep_jobs(slurm_cluster, tmp_path)
    assert job["Restarts"] == "1" and job["TimeLimit"] == f"00:0{TIME_LIMIT_MIN}:00", job
    warned = job_logs(tmp_path, "err")
    assert warned.count("Caught signal SIGUSR2 on") == 2 and warned.count("this job is timed-out") == 2, warned
    assert "Requeued job" in logs and "(0 remaining timeouts)" in logs, logs[-3000:]

    client, runs = runs_of(store)
    parents = [r for r in runs if r.data.tags.get(names.ROLE) == names.ROLE_SWEEP_PARENT]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(children) == 2  # one run per attempt, both of the one config
    assert len({r.data.tags[names.CONFIG_HASH] for r in children}) == 1
    for run in children:
        assert run.info.status == "KILLED" and run.info.end_time is not None, run.data.tags
        assert "interrupted by SIGUSR2" in run.data.tags[names.KILLED_REASON]
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, names.TRAIN_LOSS))
        assert steps and steps == list(range(len(steps)))  # what it logged before the signal, no gap


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_a_cancelled_job_ends_killed_with_its_metrics_and_the_sweep_ends_naming_it(slurm_cluster, tmp_path):
    """``scancel`` of a job that trains: Slurm sends SIGTERM and ends the job for good (scontrol then shows it
    COMPLETING, with no new restart). Its run ends KILLED with its metrics, the job returns that it ended without a
    requeue as its result, and the sweep ends (exit 1, the reason shown) instead of waiting forever."""
    store = sqlite_uri(tmp_path / "mlflow.db")

    def cancel_the_held_job(proc):
        held = wait_for(lambda: held_run_is_training(store, tmp_path), "the held job's train/loss points", proc=proc,
                        poll=0.5)
        (job,) = wait_for(lambda: sweep_jobs(slurm_cluster, tmp_path), "the job in Slurm's table")
        result = slurm_cluster._run("scancel", job["JobId"])
        assert result.returncode == 0, result.stderr
        return held

    code, shown, held = run_sweep(slurm_cluster, tmp_path, sweep_command(tmp_path, (HELD,)), cancel_the_held_job,
                                  MLP_SWEEPS_HOLD_ONCE=str(tmp_path))
    assert code == 1, f"{shown[-3000:]}\n{job_logs(tmp_path)[-6000:]}\n{slurm_cluster.logs()}"
    assert "ended without a requeue" in shown, shown[-3000:]
    (job,) = sweep_jobs(slurm_cluster, tmp_path)
    assert job["JobState"] == "CANCELLED" and job["Restarts"] == "0", job
    client, runs = runs_of(store)
    (run,) = [r for r in runs if r.data.tags.get(names.ROLE) != names.ROLE_SWEEP_PARENT]
    assert run.info.run_id == held.info.run_id and run.info.status == "KILLED", run.data.tags
    assert "interrupted by SIGTERM" in run.data.tags[names.KILLED_REASON]
    assert client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)  # what it logged before the signal
