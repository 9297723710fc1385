"""Test-only hook for tests/sweeper/tracking/test_resume.py (on PYTHONPATH only there): with ``MLP_SWEEPS_HOLD_WIDTHS=16,32``,
a job whose model has a hidden layer of one of these widths stops for good right after its first flush of train/loss
points to the store. The test waits for those rows (the job's signal that it is under way) and kills the sweep while
the job is certainly still RUNNING."""
import os

_widths = os.environ.get("MLP_SWEEPS_HOLD_WIDTHS")
if _widths:
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
                threading.Event().wait()  # until the test kills the process

        MetricSink.flush = flush_then_hold

    def fit(dataset, model_cfg, train_cfg, **kwargs):
        if set(model_cfg.hidden_sizes) & {int(w) for w in _widths.split(",")}:
            _hold_after_the_first_flush()
        return _fit(dataset, model_cfg, train_cfg, **kwargs)

    mlp_core.fit = fit
