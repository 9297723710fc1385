"""Test-only hook (on PYTHONPATH only in the tests that use it): with ``MLP_SWEEPS_RELEASE=<path>``, the first job
that trains in this process creates ``<path>.held`` and then waits, before it trains, until ``<path>`` exists. The
test waits for ``.held`` (the job's trial is RUNNING and its run claimed), does what must happen meanwhile, and then
creates ``<path>``: the job goes on and ends normally."""
import os

_release = os.environ.get("MLP_SWEEPS_RELEASE")
if _release:
    import threading

    import mlp_core

    _fit = mlp_core.fit

    def fit(*args, **kwargs):
        if not os.path.exists(_release + ".held"):
            open(_release + ".held", "w").close()
            while not os.path.exists(_release):
                threading.Event().wait(0.05)
        return _fit(*args, **kwargs)

    mlp_core.fit = fit
