"""Test-only hook for tests/cluster/test_slurm.py (on PYTHONPATH only there): with ``MLP_SWEEPS_HOLD_ONCE=<dir>`` and
``MLP_SWEEPS_HOLD_WIDTH=16``, the first job to train a model with a hidden layer of that width (it creates
``<dir>/held`` atomically) stops right after its first flush of train/loss points to the store, until a signal ends it.
The test waits for those points and preempts the job while it is certainly RUNNING; the job that Slurm requeues
trains that config to the end."""
import os

_dir, _width = os.environ.get("MLP_SWEEPS_HOLD_ONCE"), os.environ.get("MLP_SWEEPS_HOLD_WIDTH")
if _dir and _width:
    import mlp_core

    _fit = mlp_core.fit

    def _hold_after_the_first_flush():
        import threading

        from sweeper import names
        from sweeper.tracking.run import MetricSink

        flush = MetricSink.flush

        def flush_then_hold(self):
            wrote_losses = self.tracker is not None and any(point[0] == names.TRAIN_LOSS for point in self.buffer)
            flush(self)
            if wrote_losses:
                MetricSink.flush = flush  # the clean-up's own flush after the signal goes through
                threading.Event().wait()  # until a signal interrupts the wait

        MetricSink.flush = flush_then_hold

    def fit(dataset, model_cfg, train_cfg, **kwargs):
        if int(_width) in set(model_cfg.hidden_sizes):
            try:
                os.close(os.open(os.path.join(_dir, "held"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass  # held once already: this is the requeued job
            else:
                _hold_after_the_first_flush()
        return _fit(dataset, model_cfg, train_cfg, **kwargs)

    mlp_core.fit = fit
