"""The sweep's curve drawer: the figure it draws from history.csv is the run's own, a sweep's jobs hand their figure to
it, and the sweep's end leaves no curves.png undrawn when the drawer cannot start or is killed."""
from __future__ import annotations

import math
import os
import pickle
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from mlp_core import ModelConfig, TrainConfig, fit, load_dataset
from omegaconf import OmegaConf

from sweeper import handoff, names
from sweeper.lifecycle import write_artifacts
from sweeper.reporting import drawer
from sweeper.reporting.drawer import CurveDrawer, draw_request, history_from_csv, is_drawn
from sweeper.reporting.plots import curves_figure

from ...handshake import HANG, _status, wait_for
from ..sweeper_helpers import ARTIFACTS, run_cli, runs_of


@pytest.fixture(scope="module")
def result():
    """A short real run on digits with several validation points."""
    return fit(load_dataset("digits"), ModelConfig(hidden_sizes=(8,)),
               TrainConfig(epochs=3, early_stopping=False, validations_per_epoch=2))


def lines_of(fig) -> list:
    """Every line of every panel: (label, x, y), and the panels' texts and the title."""
    out = [fig._suptitle.get_text()]
    for ax in fig.axes:
        out.append([t.get_text() for t in ax.texts])
        out.append(ax.get_ylim())
        for line in ax.get_lines():
            out.append((line.get_label(), np.asarray(line.get_xdata(), dtype=np.float64).tolist(),
                        np.asarray(line.get_ydata(), dtype=np.float64).tolist()))
    return out


def same(a, b) -> bool:
    """Equal, with NaN equal to NaN (a smoothed curve of a diverged run)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def requests_for(sweep, result, count: int) -> list[dict]:
    """``count`` jobs of ``sweep``: their artifacts without the figure, and the requests they hand the drawer."""
    handoff.open_curves(sweep)
    requests = []
    for num in range(count):
        job_dir = sweep / str(num)
        job_dir.mkdir(parents=True)
        paths = write_artifacts(OmegaConf.create({"a": num}), result, job_dir, f"job {num}", curves=False)
        assert [p.name for p in paths] == ["config.yaml", "history.csv", "model.npz"]
        assert handoff.request_curves(sweep, num, None, paths[1], job_dir / "curves.png", f"job {num}")
        requests.append({"run_id": None, "history": str(paths[1]), "png": str(job_dir / "curves.png"),
                         "title": f"job {num}"})
    assert list(handoff.curve_requests(sweep).values()) == requests
    return requests


def drawn_by_the_drawer(sweep) -> list[str]:
    log = (sweep / handoff.CURVES_DIR / drawer.LOG_FILE).read_text()
    return sorted(line.split("drew ")[1] for line in log.splitlines() if "drew " in line)


def test_the_figure_drawn_from_history_csv_is_the_runs_own(tmp_path, result):
    """Same data, same title: the drawer's figure has the lines plot_curves draws from the FitResult."""
    assert len(result.val_steps) > 3
    (request,) = requests_for(tmp_path / "sweep", result, 1)
    history = history_from_csv(request["history"])
    assert history.train_loss.tolist() == result.train_loss.astype(np.float64).tolist()
    assert history.val_steps.tolist() == result.val_steps.tolist()
    assert same(lines_of(curves_figure(history, "job 0")), lines_of(curves_figure(result, "job 0")))
    png = draw_request(request)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and is_drawn(request)
    assert list(png.parent.glob("*.tmp")) == []  # drawn to a temporary file and renamed


def test_a_diverged_history_round_trips_through_the_csv(tmp_path, result):
    diverged = type(result)(**{**vars(result), "train_loss": np.array([2.3, np.inf, np.nan], dtype=np.float32),
                               "val_steps": np.array([2]), "val_loss": np.array([np.nan]),
                               "val_accuracy": np.array([0.1]), "train_accuracy": np.array([0.1])})
    (request,) = requests_for(tmp_path / "sweep", diverged, 1)
    history = history_from_csv(request["history"])
    assert same(lines_of(curves_figure(history, "d")), lines_of(curves_figure(diverged, "d")))


def test_the_drawer_process_draws_every_request_and_ends_after_the_end_mark(tmp_path, result):
    sweep = tmp_path / "sweep"
    handoff.open_curves(sweep)
    assert handoff.request_curves(sweep, 7, None, sweep / "old.csv", sweep / "old.png", "an earlier launch")
    handoff.end_curves(sweep)
    running = CurveDrawer.start(sweep)
    assert handoff.curve_requests(sweep) == {} and handoff.curves_open(sweep)  # the earlier launch's files are gone
    requests = requests_for(sweep, result, 3)
    running.finish(None, wait_seconds=600)
    assert running.process.returncode == 0 and not handoff.curves_open(sweep)
    assert all(is_drawn(r) for r in requests)
    assert drawn_by_the_drawer(sweep) == [r["png"] for r in requests]


def nice_of(pid: int) -> int:
    """The process's nice value, field 19 of /proc/<pid>/stat (after the parenthesised command name)."""
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_drawer_draws_at_the_lowest_priority(tmp_path, result):
    """A figure drawn at the jobs' priority slowed a 2-BLAS-thread fit 3-4x; at nice 19 it takes only idle CPU."""
    sweep = tmp_path / "sweep"
    running = CurveDrawer.start(sweep)
    requests = requests_for(sweep, result, 1)
    wait_for(lambda: drawn_by_the_drawer(sweep), "a figure drawn by the drawer", proc=running.process)
    assert nice_of(running.process.pid) == 19
    running.finish(None, wait_seconds=600)
    assert is_drawn(requests[0])


@pytest.mark.parametrize("how", ["cannot start", "killed"])
def test_the_sweeps_end_draws_what_the_drawer_left(tmp_path, result, monkeypatch, how):
    """The fallback keeps the promise: every curves.png exists when the sweep ends, drawn here instead."""
    sweep = tmp_path / "sweep"
    if how == "cannot start":
        monkeypatch.setattr(drawer.sys, "executable", str(tmp_path / "no-python"))
        started = CurveDrawer.start(sweep)
        assert started.process is None
    else:
        started = CurveDrawer.start(sweep)
        started.process.send_signal(signal.SIGKILL)
        started.process.wait()
    requests = requests_for(sweep, result, 2)
    assert not any(is_drawn(r) for r in requests)
    started.finish(None, wait_seconds=600)
    assert all(is_drawn(r) for r in requests)


def test_the_drawers_handle_travels_to_workers_without_its_process(tmp_path):
    """joblib and the population launcher pickle the sweep callback (and this handle) for their workers."""
    started = CurveDrawer.start(tmp_path / "sweep")
    copy = pickle.loads(pickle.dumps(started))
    assert copy == CurveDrawer(tmp_path / "sweep", None) and started.process is not None
    started.finish(None, wait_seconds=600)
    assert started.process.returncode == 0


def exited(pid: int) -> bool:
    try:
        _status(pid)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.soak
def test_the_drawer_ends_when_its_launcher_is_gone(tmp_path):
    """A launcher that ends without the sweep's end (killed, or gone before its drawer looked) leaves no drawer."""
    start = ("import sys; from pathlib import Path; from sweeper.reporting.drawer import CurveDrawer; "
             "print(CurveDrawer.start(Path(sys.argv[1])).process.pid)")
    launcher = subprocess.run([sys.executable, "-c", start, str(tmp_path / "sweep")], capture_output=True, text=True,
                              timeout=HANG, check=True)
    pid = int(launcher.stdout)
    assert not handoff.curves_ended(tmp_path / "sweep")
    wait_for(lambda: exited(pid), "the drawer's exit after its launcher's")


@pytest.mark.integration
@pytest.mark.slow
def test_a_sweeps_figures_are_drawn_by_its_drawer_and_logged_to_every_run(tmp_path, store):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "data=digits", "trainer.epochs=1", "model.width=4,8", f"tracking.uri={store}",
                    f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    client, runs = runs_of(store)
    children = [r for r in runs if names.PARENT_RUN_ID in r.data.tags]
    assert len(children) == 2
    for child in children:
        assert {a.path for a in client.list_artifacts(child.info.run_id)} == ARTIFACTS
    # the jobs (here in the launching process) drew nothing: the drawer process drew both figures
    assert drawn_by_the_drawer(sweep) == [str(sweep / "0" / "curves.png"), str(sweep / "1" / "curves.png")]
    requests = handoff.curve_requests(sweep)
    assert sorted(r["run_id"] for r in requests.values()) == sorted(c.info.run_id for c in children)


def state_of(pid: int) -> str:
    """The process's state letter (T: stopped), field 3 of /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_drawer_is_stopped_while_its_launcher_fits_and_draws_after(tmp_path, result):
    """A figure drawn beside a 2-BLAS-thread fit slowed it even at nice 19 (0.48 s instead of 0.33 s for task3c): the
    launching process stops its drawer for each fit, and marks the fit for any other drawer of the sweep."""
    sweep = tmp_path / "sweep"
    running = CurveDrawer.start(sweep)
    requests = requests_for(sweep, result, 2)
    wait_for(running.ready, "the drawer's parent-death signal set", proc=running.process)
    with drawer.fitting(sweep):
        wait_for(lambda: state_of(running.process.pid) == "T", "the drawer stopped for the fit", proc=running.process)
        (mark,) = (sweep / handoff.CURVES_DIR).glob(f"{handoff.TRAINING_PREFIX}*")
        assert mark.name.startswith(f"{handoff.TRAINING_PREFIX}{os.getpid()}-") and drawer.training_now(sweep)
    wait_for(lambda: state_of(running.process.pid) != "T", "the drawer continued after the fit", proc=running.process)
    assert not list((sweep / handoff.CURVES_DIR).glob(f"{handoff.TRAINING_PREFIX}*")) and not drawer.training_now(sweep)
    wait_for(lambda: len(drawn_by_the_drawer(sweep)) == 2, "both figures drawn once the fit ended",
             proc=running.process)
    running.finish(None, wait_seconds=600)
    assert all(is_drawn(r) for r in requests)
    with drawer.fitting(sweep):  # the sweep has ended: there is no drawer to stop
        assert running.process.returncode == 0


def test_a_fit_in_another_process_holds_the_drawer_until_it_ends(tmp_path, monkeypatch):
    """A worker's fit (joblib, population) is seen by its mark; a mark whose process is gone, or from another host,
    holds nothing; the end of the sweep lets the drawer draw the rest whatever the marks say."""
    sweep = tmp_path / "sweep"
    folder = handoff.open_curves(sweep)
    worker = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True, timeout=HANG)
        stale = folder / f"{handoff.TRAINING_PREFIX}{int(dead.stdout)}-0@{socket.gethostname()}"
        stale.touch()
        (folder / f"{handoff.TRAINING_PREFIX}{worker.pid}-0@another-host").touch()
        assert not drawer.training_now(sweep) and not stale.exists()  # the dead one's mark is removed on the way
        live = folder / f"{handoff.TRAINING_PREFIX}{worker.pid}-0@{socket.gethostname()}"
        live.touch()
        looks = []

        def sleep(seconds):  # the drawer's poll: the worker's fit ends at the third look
            looks.append(seconds)
            if len(looks) == 3:
                live.unlink()

        monkeypatch.setattr(drawer.time, "sleep", sleep)
        assert drawer.wait_for_gap(sweep, os.getppid()) and looks == [drawer.GAP_POLL_SECONDS] * 3
        live.touch()
        assert not drawer.wait_for_gap(sweep, os.getppid() + 1)  # its launcher is gone: the drawer stops
        handoff.end_curves(sweep)
        looks.clear()
        assert drawer.wait_for_gap(sweep, os.getppid()) and looks == []
    finally:
        worker.stdin.close()
        worker.wait(timeout=HANG)


@pytest.mark.soak
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_a_drawer_stopped_for_a_fit_ends_when_its_launcher_is_killed(tmp_path):
    """SIGKILL to the launcher mid-fit leaves no stopped drawer behind: the kernel continues it, and it exits."""
    start = ("import sys; from pathlib import Path; from sweeper.reporting.drawer import CurveDrawer, fitting; "
             "sweep = Path(sys.argv[1]); drawer = CurveDrawer.start(sweep)\n"
             "while not drawer.ready():\n    pass\n"
             "with fitting(sweep):\n    print(drawer.process.pid, flush=True); sys.stdin.read()")
    launcher = subprocess.Popen([sys.executable, "-c", start, str(tmp_path / "sweep")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    pid = int(launcher.stdout.readline())
    wait_for(lambda: state_of(pid) == "T", "the drawer stopped for the fit", proc=launcher)
    launcher.kill()
    launcher.wait(timeout=HANG)
    wait_for(lambda: exited(pid), "the stopped drawer's exit after its launcher was killed")
