"""Test-only hook (on PYTHONPATH only in tests/sweeper/sweep/test_population_*.py). Each part acts
only when its variable is set.

``MLP_SWEEPS_CLAIM_BARRIER_DIR=<dir>``, ``MLP_SWEEPS_CLAIM_BARRIER_ME=a``, ``MLP_SWEEPS_CLAIM_BARRIER_OTHER=b``: two
population sweeps meet between their members' claims. This process creates ``<dir>/a.in-line`` once its first claim
has its ticket (it is in line for that config: it holds it or waits for it), and before its second claim creates
``<dir>/a.between`` and waits until ``<dir>/b.in-line`` exists. So each sweep has its first claim in line before
either asks for its second: two sweeps that claim in opposite orders each hold what the other wants next.

``MLP_SWEEPS_WORKER_GRACE=<seconds>``: ``signals.WORKER_GRACE_SECONDS``, so that a launcher that waits out its grace
is told apart from one that does not without measuring seconds.

``MLP_SWEEPS_WORKER_MARKS=<dir>``: each loky worker process creates ``<dir>/<pid>`` when it starts.

``MLP_SWEEPS_FAIL_SETUP=<key>=<value>``: a population member whose config has that value fails in its set-up (after
the launcher grouped it), with ``RuntimeError: injected set-up failure``.
"""
import os

_marks = os.environ.get("MLP_SWEEPS_WORKER_MARKS")
if _marks:
    with open("/proc/self/cmdline", "rb") as _handle:
        if b"popen_loky" in _handle.read():
            open(os.path.join(_marks, str(os.getpid())), "w").close()

_fail = os.environ.get("MLP_SWEEPS_FAIL_SETUP")
if _fail:
    import sweeper.sweep.population
    from omegaconf import OmegaConf

    _open_job = sweeper.sweep.population.open_job
    _key, _, _value = _fail.partition("=")

    def open_job(cfg, *args, **kwargs):
        if str(OmegaConf.select(cfg, _key)) == _value:
            raise RuntimeError("injected set-up failure")
        return _open_job(cfg, *args, **kwargs)

    sweeper.sweep.population.open_job = open_job

_grace = os.environ.get("MLP_SWEEPS_WORKER_GRACE")
if _grace:
    import sweeper.signals

    sweeper.signals.WORKER_GRACE_SECONDS = float(_grace)

_dir = os.environ.get("MLP_SWEEPS_CLAIM_BARRIER_DIR")
if _dir:
    import threading
    import time
    from pathlib import Path

    import sweeper.job
    import sweeper.tracking.claims

    _me, _other = os.environ["MLP_SWEEPS_CLAIM_BARRIER_ME"], os.environ["MLP_SWEEPS_CLAIM_BARRIER_OTHER"]
    _acquire, _wait_in_line = sweeper.job.acquire, sweeper.tracking.claims._wait_in_line
    _claims: list[str] = []

    def _in_line(*args, **kwargs):
        Path(_dir, f"{_me}.in-line").touch()
        return _wait_in_line(*args, **kwargs)

    def acquire(*args, **kwargs):
        _claims.append("claim")
        if len(_claims) == 2:
            Path(_dir, f"{_me}.between").touch()
            deadline = time.monotonic() + 600  # bounds a hang only (tests/handshake.py HANG)
            while not Path(_dir, f"{_other}.in-line").exists() and time.monotonic() < deadline:
                threading.Event().wait(0.05)
        return _acquire(*args, **kwargs)

    sweeper.tracking.claims._wait_in_line = _in_line
    sweeper.job.acquire = acquire
