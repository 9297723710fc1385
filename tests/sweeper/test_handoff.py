"""Sweep progress lines (`k/N done, r reused, f failed, ETA`) and the end-of-sweep summary.

Unit tests drive sweeper.handoff through its files with real processes writing at once; the integration test
runs a real resumed digits sweep and reads what it logged."""
from __future__ import annotations

import logging
import multiprocessing
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from sweeper.reporting.console import summary_lines
from sweeper.reporting.finalize import SweepSummary
from sweeper import handoff
from sweeper.reporting.tables import SummaryRow

from .sweeper_helpers import run_cli, sqlite_uri


def _record(args):
    sweep_dir, num, outcome = args
    return handoff.record(sweep_dir, num, outcome, 1.0).done


def test_parallel_writers_are_all_counted_and_the_last_one_sees_every_job(tmp_path):
    handoff.start(tmp_path, 12)
    outcomes = ["done"] * 7 + ["reused"] * 3 + ["failed"] * 2
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        seen = pool.map(_record, [(str(tmp_path), i, o) for i, o in enumerate(outcomes)])
    assert max(seen) == 12 and min(seen) >= 1
    final = handoff.read(tmp_path)
    assert (final.done, final.total, final.reused, final.failed) == (12, 12, 3, 2)
    assert final.line() == "12/12 done, 3 reused, 2 failed, all jobs ended"
    # a requeued job rewrites its own file instead of counting twice
    handoff.record(tmp_path, 0, "failed", 1.0)
    assert (handoff.read(tmp_path).done, handoff.read(tmp_path).failed) == (12, 3)


def test_eta_is_the_mean_trained_job_time_times_the_jobs_left_over_the_jobs_running_at_once(tmp_path):
    handoff.start(tmp_path, 10)
    assert handoff.read(tmp_path).line() == "0/10 done, 0 reused, 0 failed, ETA unknown"
    handoff.record(tmp_path, 0, "reused", 0.0, now=100.0)
    assert handoff.read(tmp_path).line() == "1/10 done, 1 reused, 0 failed, ETA unknown"  # nothing trained yet
    handoff.record(tmp_path, 1, "reused", 0.0, now=100.0)
    # two jobs of 60 s ran side by side from t=100 to t=160: 2 at once, 6 left of 60 s each -> 180 s
    handoff.record(tmp_path, 2, "done", 60.0, now=160.0)
    handoff.record(tmp_path, 3, "failed", 60.0, now=160.0)
    assert handoff.read(tmp_path).eta_seconds == pytest.approx(180.0)
    assert handoff.read(tmp_path).line() == "4/10 done, 2 reused, 1 failed, ETA 0:03:00"
    # one after the other instead (serial): 360 s
    handoff.record(tmp_path, 3, "failed", 60.0, now=220.0)
    assert handoff.read(tmp_path).eta_seconds == pytest.approx(360.0)
    assert handoff.format_seconds(3 * 86400 + 3723) == "3 days, 1:02:03"


def test_job_outcome_records_done_reused_failed_and_nothing_for_an_interrupt(tmp_path, caplog):
    handoff.start(tmp_path, 4)
    hydra_cfg = lambda num: SimpleNamespace(sweep=SimpleNamespace(dir=str(tmp_path)), job=SimpleNamespace(num=num))
    caplog.set_level(logging.INFO, logger="sweeper.handoff")
    with handoff.job_outcome(hydra_cfg(0)):
        pass
    with handoff.job_outcome(hydra_cfg(1)) as outcome:
        outcome.reused = True
    with pytest.raises(RuntimeError), handoff.job_outcome(hydra_cfg(2)):
        raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt), handoff.job_outcome(hydra_cfg(3)):
        raise KeyboardInterrupt
    with handoff.job_outcome(None):  # not in a sweep: nothing recorded
        pass
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["sweep progress: 1/4 done, 0 reused, 0 failed, ETA " + lines[0].rsplit("ETA ", 1)[1],
                     "sweep progress: 2/4 done, 1 reused, 0 failed, ETA " + lines[1].rsplit("ETA ", 1)[1],
                     "sweep progress: 3/4 done, 1 reused, 1 failed, ETA " + lines[2].rsplit("ETA ", 1)[1]]
    assert re.fullmatch(r"\d+:\d\d:\d\d", lines[2].rsplit("ETA ", 1)[1])
    assert sorted(p.name for p in (tmp_path / handoff.PROGRESS_DIR).glob("job-*")) == [
        "job-0.json", "job-1.json", "job-2.json"]


def test_no_progress_outside_a_sweep_the_callback_started(tmp_path):
    assert handoff.record(tmp_path, 0, "done", 1.0) is None
    assert not (tmp_path / handoff.PROGRESS_DIR).exists()
    with pytest.raises(ValueError, match="unknown job outcome 'ok'; valid: done, reused, failed"):
        handoff.record(tmp_path, 0, "ok", 1.0)


def test_summary_lines_table_best_child_files_and_extra_lines(tmp_path):
    def row(width, acc, loss, status="FINISHED", stop="early_stopping", seconds=12.34):
        return SummaryRow(f"task3c width={width}", f"id{width}", status, "", {"model.width": str(width)},
                          num_parameters=width * 795, best_val_accuracy=acc, best_val_loss=loss, stop_reason=stop,
                          seconds=seconds)

    rows = [row(32, 0.95, 0.2), row(64, 0.97, 0.1, seconds=3.0), row(128, None, None, "FAILED", "", None)]
    summary = SweepSummary(rows=rows, keys=["model.width"], groups=[], best=rows[1],
                           files={"comparison.png": tmp_path / "comparison.png", "summary.md": tmp_path / "summary.md",
                                  "summary.csv": tmp_path / "summary.csv"}, reused={"id32"})
    lines = summary_lines(summary, "sweep task4_width", extra_lines=["open: http://x"])
    assert lines[0] == "sweep task4_width: 3 runs (1 reused, 1 not FINISHED)"
    assert lines[1].split() == ["width", "params", "best", "val", "acc", "best", "val", "loss", "stop", "reason",
                                "seconds", "status"]
    assert lines[3].split() == ["32", "25,440", "0.9500", "0.2000", "early_stopping", "12.3", "reused"]
    assert lines[4].split() == ["64", "50,880", "0.9700", "0.1000", "early_stopping", "3.00", "FINISHED"]
    assert lines[5].split() == ["128", "101,760", "-", "-", "-", "-", "FAILED"]
    # numbers right-aligned under their header
    assert lines[1].index("params") + len("params") == lines[3].index("25,440") + len("25,440")
    assert lines[1].index("seconds") + len("seconds") == lines[3].index("12.3") + len("12.3")
    assert lines[6] == "best: task3c width=64 (best val loss 0.1000, best val acc 0.9700, run id64)"
    assert lines[7:] == [f"comparison.png: {tmp_path / 'comparison.png'}", f"summary.md: {tmp_path / 'summary.md'}",
                         "open: http://x"]


@pytest.mark.integration
@pytest.mark.slow
def test_a_resumed_sweep_logs_its_progress_and_ends_with_the_results_table_in_its_own_grid_order(tmp_path):
    store = sqlite_uri(tmp_path / "mlflow.db")
    common = ["data=digits", "trainer.epochs=2", f"tracking.uri={store}"]
    first = run_cli(["-m", *common, "model.width=4,8", f"hydra.sweep.dir={tmp_path / 'first'}"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # the relaunch adds a width and lists the grid in another order
    proc = run_cli(["-m", *common, "model.width=8,16,4", f"hydra.sweep.dir={tmp_path / 'second'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    # one line after each job, as the basic launcher runs them in order: reused, the new width trained, reused
    assert re.findall(r"sweep progress: (\d/\d done, \d reused, \d failed)", out) == [
        "1/3 done, 1 reused, 0 failed", "2/3 done, 1 reused, 0 failed", "3/3 done, 2 reused, 0 failed"]
    assert "sweep progress: 3/3 done, 2 reused, 0 failed, all jobs ended" in out
    # the same line is in the last job's own log file
    assert "3/3 done, 2 reused, 0 failed" in (tmp_path / "second" / "2" / "app.log").read_text()
    lines = [l.split("] ", 1)[-1] for l in out.splitlines()]
    start = lines.index("sweep data=digits trainer.epochs=2 model.width=8,16,4: 3 runs (2 reused, 0 not FINISHED)")
    header, rule, *body = lines[start + 1:start + 6]
    assert header.split()[:2] == ["width", "params"] and set(rule) <= {"-", " "}
    # in this launch's grid order, though the reused runs had other job numbers in the launch that trained them
    assert [(r.split()[0], r.split()[-1]) for r in body] == [("8", "reused"), ("16", "FINISHED"), ("4", "reused")]
    best = lines[start + 6]
    assert best.startswith("best: width=") and "default data=digits epochs=2" in best
    # one seed per width: the verdict says why it cannot judge seed noise instead of ranking the widths
    assert lines[start + 7].startswith("verdict: width=") and "share one seed" in lines[start + 7]
    # one swept key: its importance is 1 by construction, and the line says why that is no finding
    assert lines[start + 8].startswith("importance (fANOVA, 3 configs): width 1.00 (")
    files = lines[start + 9:start + 13]
    assert [line.split(": ", 1)[0] for line in files] == ["comparison.png", "importance.png", "slice.png", "summary.md"]
    for line in files:
        assert line.split(": ", 1)[1] == str(tmp_path / "second" / line.split(": ", 1)[0])
        assert Path(line.split(": ", 1)[1]).is_file()


def run_in_terminal(args: list[str], env: dict[str, str]) -> str:
    """`python -m sweeper ARGS` on a pseudo-terminal of 120 columns; everything it wrote (a hang is bounded)."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import sys
    import termios
    import time

    from ..handshake import HANG

    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the terminal
        os.execve(sys.executable, [sys.executable, "-m", "sweeper", *args], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    out, deadline = b"", time.monotonic() + HANG
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out.decode(errors="replace")[-3000:]
    return out.decode(errors="replace")


@pytest.mark.integration
@pytest.mark.slow
def test_in_a_terminal_the_sweep_bar_sits_above_the_run_bar(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env.update(MLP_SWEEPS_OUTPUTS=str(tmp_path / "outputs"), TERM="xterm")
    out = run_in_terminal(["-m", "data=digits", "trainer.epochs=2", "model.width=4,8", "tracking.enabled=false",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"], env)
    frames = out.split("\r")
    sweep_bars = [f for f in frames if f.startswith("sweep: ")]
    assert any("| 0/2 [" in f for f in sweep_bars) and any("| 2/2 [" in f for f in sweep_bars), sweep_bars
    assert any("| 1/2 [" in f and "0 reused, 0 failed" in f for f in sweep_bars)
    # each run's bar is drawn one line below (tqdm moves the cursor back up after it: ESC [ A)
    run_bars = [f for f in frames if f.startswith("width=") and "default data=digits epochs=2" in f and "step/s" in f]
    assert run_bars and all(f.endswith("\x1b[A") for f in run_bars), run_bars[:3]
    assert "sweep progress: 2/2 done, 0 reused, 0 failed, all jobs ended" in out


@pytest.mark.slow
@pytest.mark.integration
def test_a_relaunch_into_the_same_sweep_dir_counts_only_its_own_jobs(tmp_path):
    common = ["data=digits", "trainer.epochs=1", f"hydra.sweep.dir={tmp_path / 'same'}"]
    first = run_cli(["-m", *common, "model.width=8,16,32"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    proc = run_cli(["-m", *common, "model.width=8,16"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the first launch's three job files do not count for the second launch's two jobs
    assert re.findall(r"sweep progress: (\d/\d done, \d reused, \d failed)", proc.stdout + proc.stderr) == [
        "1/2 done, 1 reused, 0 failed", "2/2 done, 2 reused, 0 failed"]
