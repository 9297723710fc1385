"""Fault injection for tests/reliability/test_faults.py (on PYTHONPATH only there): a job whose model has a hidden
layer of width $MLP_SWEEPS_CRASH_WIDTH crashes inside mlp_core.fit, after its run was created, as a real bug would."""
import os

_width = os.environ.get("MLP_SWEEPS_CRASH_WIDTH")
if _width:
    import mlp_core

    _fit = mlp_core.fit

    def fit(dataset, model_cfg, train_cfg, **kwargs):
        if int(_width) in model_cfg.hidden_sizes:
            raise RuntimeError(f"injected crash for hidden width {_width}")
        return _fit(dataset, model_cfg, train_cfg, **kwargs)

    mlp_core.fit = fit
