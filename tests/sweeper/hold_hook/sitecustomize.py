"""Test-only hook (on PYTHONPATH only in the tests that use it): with ``MLP_SWEEPS_HOLD_WIDTHS=16,32``, a job whose
model has a hidden layer of one of these widths stops right after its first flush of train/loss points to the store,
until a signal ends it. The test waits for those rows (the job's signal that it is under way) and kills or preempts the
job while it is certainly RUNNING.

With ``MLP_SWEEPS_HOLD_ONCE=<dir>`` too (tests/cluster/test_slurm.py), only the first such job holds (it creates
``<dir>/held`` atomically); the job that Slurm requeues trains that config to the end."""
import os

_widths = os.environ.get("MLP_SWEEPS_HOLD_WIDTHS")
_once_dir = os.environ.get("MLP_SWEEPS_HOLD_ONCE")
if _widths:
    import mlp_core

    _fit = mlp_core.fit

    def _first_hold() -> bool:
        if not _once_dir:
            return True
        try:
            os.close(os.open(os.path.join(_once_dir, "held"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False  # held once already: this is the requeued job
        return True

    def _hold_after_the_first_flush():
        import time

        from sweeper import names
        from sweeper.tracking.run import MetricSink

        flush = MetricSink.flush

        def flush_then_hold(self):
            wrote_losses = self.tracker is not None and any(point[0] == names.TRAIN_LOSS for point in self.buffer)
            flush(self)
            if wrote_losses:
                MetricSink.flush = flush  # the clean-up's own flush after the signal goes through
                # until a signal interrupts the wait, or the test kills the process. A plain sleep holds no lock: a
                # second signal (Slurm's SIGTERM right after its SIGUSR2) that lands inside Event.wait's lock
                # hand-over left that lock half released ("RuntimeError: release unlocked lock")
                while True:
                    time.sleep(3600)

        MetricSink.flush = flush_then_hold

    def fit(dataset, model_cfg, train_cfg, **kwargs):
        if set(model_cfg.hidden_sizes) & {int(w) for w in _widths.split(",")} and _first_hold():
            _hold_after_the_first_flush()
        return _fit(dataset, model_cfg, train_cfg, **kwargs)

    mlp_core.fit = fit
