"""Test-only hook for tests/sweeper/tracking/test_claims.py (on PYTHONPATH only there): two sweeps meet at each shared
config. With ``MLP_SWEEPS_BARRIER_DIR=<dir>``, ``MLP_SWEEPS_BARRIER_ME=a`` (or b) and ``MLP_SWEEPS_BARRIER_WIDTHS=8,16``,
a job whose ``model.width`` is listed writes ``<dir>/<width>.<me>`` right after its start-up check for a FINISHED run
(when the lifecycle loads the data) and waits until the other sweep's job of that width wrote its file. Both jobs have then
found the config unfinished and decide at the same moment whether to train it: the race the claims must settle."""
import os

_dir = os.environ.get("MLP_SWEEPS_BARRIER_DIR")
if _dir:
    import time
    from pathlib import Path

    import sweeper.lifecycle

    _load_data = sweeper.lifecycle.load_data
    _widths = set(os.environ["MLP_SWEEPS_BARRIER_WIDTHS"].split(","))
    _me = os.environ["MLP_SWEEPS_BARRIER_ME"]

    def load_data(cfg):
        width = str(cfg.model.width)
        if width in _widths:
            Path(_dir, f"{width}.{_me}").touch()
            deadline = time.monotonic() + 600  # bounds a hang only (tests/handshake.py HANG)
            while len(list(Path(_dir).glob(f"{width}.*"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        return _load_data(cfg)

    sweeper.lifecycle.load_data = load_data
