"""Concurrent writers on the MLflow store: sqlite direct (with/without retry) vs a local ``mlflow server``.

N worker processes (spawn) start together (barrier) and each logs R runs shaped like a real training run: params, tags,
V validation points, each with one log_batch of the train/loss steps since the last point and one of the 3 validation
metrics, 7 summary metrics, one small artifact, set_terminated. No training happens between points unless --work-ms is
given, so this is the worst case for lock contention. Afterwards the launcher reads back every metric history and
counts lost points.

    .venv/bin/python benchmarks/bench_store.py [--workers 4] [--runs 2] [--steps 2000] [--val-points 20]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SUMMARY = ("num_parameters", "best/val_loss", "best/val_accuracy", "final/val_accuracy", "final/val_loss", "epochs",
           "train_seconds")


def run_workload(client, experiment_id, parent_id, worker, runs, steps, val_points, artifact_dir, work_s=0.0):
    """Log ``runs`` training-shaped runs through ``client``. Returns (run_ids, attempted {run_id: {key: points}},
    locked failures, other failures); a failed call is counted and its data is lost (no retry here)."""
    from mlflow.entities import Metric, Param, RunTag

    from sweeper.tracking.store import is_locked_error

    locked = other = 0
    run_ids, expected = [], {}

    def call(fn, *args, **kwargs):
        nonlocal locked, other
        try:
            fn(*args, **kwargs)
            return True
        except Exception as exc:  # counted, the benchmark keeps going
            if is_locked_error(exc):
                locked += 1
            else:
                other += 1
                print(f"worker {worker}: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
            return False

    for r in range(runs):
        run = client.create_run(experiment_id, run_name=f"w{worker}-r{r}",
                                tags={"mlflow.parentRunId": parent_id, "sweep_id": "bench"})
        run_id = run.info.run_id
        run_ids.append(run_id)
        counts = expected[run_id] = {}
        params = [Param(f"group{i // 10}.param{i}", str(i * 0.1)) for i in range(30)]
        call(client.log_batch, run_id, params=params)
        call(client.log_batch, run_id, tags=[RunTag(k, f"value-{worker}-{r}") for k in
                                             ("config_hash", "git_commit", "hydra.overrides", "stop_reason")])
        per_point = steps // val_points
        ts = int(time.time() * 1000)
        for p in range(val_points):
            if work_s:
                time.sleep(work_s)
            lo, hi = p * per_point, (p + 1) * per_point if p < val_points - 1 else steps
            for start in range(lo, hi, 1000):
                chunk = [Metric("train/loss", 1.0 / (s + 1), ts, s) for s in range(start, min(hi, start + 1000))]
                call(client.log_batch, run_id, metrics=chunk)
                counts["train/loss"] = counts.get("train/loss", 0) + len(chunk)
            val = [Metric(k, 0.5, ts, hi - 1) for k in ("train/accuracy", "val/loss", "val/accuracy")]
            call(client.log_batch, run_id, metrics=val)
            for m in val:
                counts[m.key] = counts.get(m.key, 0) + 1
        call(client.log_batch, run_id, metrics=[Metric(k, 1.0, ts, 0) for k in SUMMARY])
        for k in SUMMARY:
            counts[k] = 1
        artifact = Path(artifact_dir) / f"history-{worker}-{r}.csv"
        artifact.write_text("step,train_loss\n" + "".join(f"{s},{1.0 / (s + 1)}\n" for s in range(100)))
        call(client.log_artifact, run_id, str(artifact))
        call(client.set_terminated, run_id, "FINISHED")
    return run_ids, expected, locked, other


def _worker(uri, experiment_id, parent_id, worker, mode, runs, steps, val_points, artifact_dir, work_s, barrier,
            queue):
    """Process entry point. mode: "raw" (no retry), "retry" (sweeper.tracking.store.RetryingClient), "server" (http URI)."""
    try:
        from mlflow.tracking import MlflowClient

        from sweeper.tracking.store import RetryingClient

        retries = [0]
        client = MlflowClient(tracking_uri=uri)
        if mode == "retry":
            client = RetryingClient(client, on_retry=lambda exc, attempt: retries.__setitem__(0, retries[0] + 1))
        client.get_experiment(experiment_id)  # opens the engine before the clock starts
        barrier.wait(timeout=120)
        start = time.monotonic()
        run_ids, expected, locked, other = run_workload(client, experiment_id, parent_id, worker, runs, steps,
                                                         val_points, artifact_dir, work_s)
        queue.put(dict(worker=worker, run_ids=run_ids, expected=expected, locked=locked, other=other,
                       retries=retries[0], seconds=time.monotonic() - start))
    except BaseException as exc:  # report instead of hanging the launcher
        queue.put(dict(worker=worker, error=f"{type(exc).__name__}: {exc}"))


def prepare_store(db_path: Path, name: str = "bench"):
    """Create/migrate the sqlite store, the experiment and a parent run in this (launching) process."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{db_path}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    experiment_id = exp.experiment_id if exp else client.create_experiment(
        name, artifact_location=(db_path.parent / "mlartifacts").as_uri())
    parent = client.create_run(experiment_id, run_name=f"parent-{time.time_ns()}")
    return client, uri, experiment_id, parent.info.run_id


def hold_lock(db_path, after_s, hold_s):
    """Thread body: like a long reader/backup/``sqlite3`` shell, hold an EXCLUSIVE lock on the store for hold_s."""
    import sqlite3

    time.sleep(after_s)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    time.sleep(hold_s)
    conn.execute("ROLLBACK")
    conn.close()


def run_case(mode, uri, read_client, experiment_id, parent_id, workers, runs, steps, val_points, artifact_dir,
             work_s=0.0, hold=None):
    """hold = (db_path, seconds): an EXCLUSIVE lock is taken 1 s after the workers start and held that long."""
    import threading

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(uri, experiment_id, parent_id, w, mode, runs, steps, val_points,
                                               artifact_dir, work_s, barrier, queue)) for w in range(workers)]
    for p in procs:
        p.start()
    barrier.wait(timeout=180)
    start = time.monotonic()
    holder = None
    if hold:
        holder = threading.Thread(target=hold_lock, args=(hold[0], 1.0, hold[1]))
        holder.start()
    results = [queue.get(timeout=900) for _ in procs]
    wall = time.monotonic() - start
    for p in procs:
        p.join(timeout=30)
    if holder:
        holder.join()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"{mode}: worker crashed: {errors}")
    lost = expected_total = 0
    for res in results:
        for run_id, counts in res["expected"].items():
            for key, attempted in counts.items():
                expected_total += attempted
                lost += attempted - len(read_client.get_metric_history(run_id, key))
    return dict(mode=mode, wall=wall, locked=sum(r["locked"] for r in results), other=sum(r["other"] for r in results),
                retries=sum(r["retries"] for r in results), lost=lost, points=expected_total,
                runs=sum(len(r["run_ids"]) for r in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2, help="runs per worker, one after the other")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--val-points", type=int, default=20)
    parser.add_argument("--work-ms", type=float, default=0.0, help="simulated training time per validation point")
    parser.add_argument("--server-workers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3,
                        help="cases without a held lock run this often; the table shows the median wall time")
    parser.add_argument("--hold-s", type=float, default=25.0,
                        help="the *+hold cases hold an EXCLUSIVE lock this long (MLflow's busy_timeout is 20 s)")
    parser.add_argument("--cases", default="raw,retry,timeout,server,raw+hold,retry+hold,timeout+hold,server+hold")
    args = parser.parse_args()

    from tests.servers import LocalServer

    cases = args.cases.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        tmp = Path(tmp)
        artifact_dir = tmp / "src"
        artifact_dir.mkdir()
        t0 = time.monotonic()
        read_client, uri, experiment_id, parent_id = prepare_store(tmp / "mlflow.db")
        print(f"store creation + migration in the launcher: {time.monotonic() - t0:.1f} s")
        common = (read_client, experiment_id, parent_id, args.workers, args.runs, args.steps, args.val_points,
                  str(artifact_dir), args.work_ms / 1000)
        db = tmp / "mlflow.db"
        server = None
        labels = {"raw": "sqlite direct, no retry", "retry": "sqlite direct + retrying()",
                  "timeout": "sqlite ?timeout=60, no retry", "server": f"mlflow server --workers {args.server_workers}"}
        for case in cases:
            base, _, extra = case.partition("+")
            hold = (db, args.hold_s) if extra == "hold" else None
            label = labels[base] + (f", lock held {args.hold_s:g} s" if hold else "")
            startup = 0.0
            if base == "server":
                if server is None:
                    server = LocalServer(uri, artifacts_destination=(tmp / "mlartifacts").as_uri(),
                                         workers=args.server_workers, log_path=tmp / "server.log").start()
                    startup = server.startup_seconds
                case_uri, mode = server.uri, "server"
            else:
                case_uri = uri + "?timeout=60" if base == "timeout" else uri
                mode = "retry" if base == "retry" else "raw"
            reps = [run_case(mode, case_uri, *common, hold=hold) for _ in range(1 if hold else args.repeat)]
            walls = sorted(r["wall"] for r in reps)
            row = {k: (sum(r[k] for r in reps) if isinstance(reps[0][k], int) else reps[0][k]) for k in reps[0]}
            row |= dict(wall=walls[len(walls) // 2], wall_range=(walls[0], walls[-1]), label=label, startup=startup)
            rows.append(row)
            print(f"done: {label}", flush=True)
        if server is not None:
            t_stop = time.monotonic()
            server.stop()
            print(f"server stopped (SIGTERM to its process group) in {time.monotonic() - t_stop:.2f} s")

    print(f"\n{args.workers} workers x {args.runs} runs, {args.steps} train/loss steps + {args.val_points} validation "
          f"points per run, work {args.work_ms:g} ms/point; cases without a held lock: median of {args.repeat} "
          "(counts summed over the repeats)")
    header = (f"{'case':44} {'wall s':>7} {'(min-max)':>11} {'startup s':>9} {'locked':>7} {'other':>6} {'retries':>7} "
              f"{'lost':>6} {'points':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        lo, hi = r["wall_range"]
        print(f"{r['label']:44} {r['wall']:7.2f} {f'{lo:.1f}-{hi:.1f}':>11} {r['startup']:9.2f} {r['locked']:7d} "
              f"{r['other']:6d} {r['retries']:7d} {r['lost']:6d} {r['points']:7d}")
    base = next((r for r in rows if r["mode"] == "retry"), None)
    if base:
        for r in rows:
            if r is not base:
                print(f"wall / wall(sqlite direct + retrying()): {r['wall'] / base['wall']:5.2f}  {r['label']}")
    server_rows = [r for r in rows if r["mode"] == "server"]
    if base and server_rows:
        cost = server_rows[0]["startup"] + server_rows[0]["wall"] - base["wall"]
        print(f"server overhead for one sweep like this: {server_rows[0]['startup']:.1f} s startup + "
              f"{server_rows[0]['wall'] - base['wall']:.1f} s slower logging = {cost:.1f} s")


if __name__ == "__main__":
    main()
