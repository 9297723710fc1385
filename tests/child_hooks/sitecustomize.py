"""Test-only hooks in the app's own processes (on PYTHONPATH only in the tests that set one of these variables).

- ``MLP_SWEEPS_CRASH_WIDTH=13`` (tests/reliability/test_faults.py): a job whose model has a hidden layer of width 13
  crashes inside mlp_core.fit, after its run was created, as a real bug would.
- ``MLP_SWEEPS_HOLD_WIDTHS=16,32`` (tests/sweeper/test_resume.py): a job whose model has a hidden layer of one of these
  widths stops for good right after its first flush of train/loss points to the store. The test waits for those rows
  (the job's signal that it is under way) and kills the sweep while the job is certainly still RUNNING.
"""
import os

_crash_width = os.environ.get("MLP_SWEEPS_CRASH_WIDTH")
_hold_widths = os.environ.get("MLP_SWEEPS_HOLD_WIDTHS")

if _crash_width or _hold_widths:
    import mlp_core

    _fit = mlp_core.fit

    def _hold_after_the_first_flush() -> None:
        import threading

        from sweeper.app import MetricSink

        flush = MetricSink.flush

        def flush_then_hold(self):
            wrote_losses = self.tracker is not None and any(point[0] == "train/loss" for point in self.buffer)
            flush(self)
            if wrote_losses:
                threading.Event().wait()  # until the test kills the process

        MetricSink.flush = flush_then_hold

    def fit(dataset, model_cfg, train_cfg, **kwargs):
        widths = set(model_cfg.hidden_sizes)
        if _crash_width and int(_crash_width) in widths:
            raise RuntimeError(f"injected crash for hidden width {_crash_width}")
        if _hold_widths and widths & {int(w) for w in _hold_widths.split(",")}:
            _hold_after_the_first_flush()
        return _fit(dataset, model_cfg, train_cfg, **kwargs)

    mlp_core.fit = fit
