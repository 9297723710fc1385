"""No silent wrong result: a trial its pruner stopped, with restore_best, saves the weights of its best validation point
(real Hydra multirun, the random search sweeper with median pruning, a real sqlite store, the digits dataset)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from sweeper import names
from sweeper.lifecycle import load_data
from sweeper.config.checks import to_core

from mlp_core import MLP, ValidationPoint, fit

from ..sweeper.sweeper_helpers import run_cli, runs_of, sqlite_uri


def retrain_until(cfg, step: int) -> MLP:
    """The weights of the run `cfg` right after `step`, trained again in this process without restore_best."""
    from threadpoolctl import threadpool_limits

    model, train = to_core(cfg)
    train = type(train)(**{**train.__dict__, "restore_best": False})
    data = load_data(cfg)

    def stop_there(event):
        return "stopped" if isinstance(event, ValidationPoint) and event.step == step else None

    with threadpool_limits(limits=int(cfg.trainer.blas_threads), user_api="blas"):
        return fit(data, model, train, on_event=stop_there).model


@pytest.mark.slow
@pytest.mark.integration
def test_a_pruned_trial_with_restore_best_saves_the_finite_weights_of_its_best_validation_point(tmp_path):
    args = ["-m", "hydra/sweeper=random", "hydra.sweeper.n_trials=6", "hydra.sweeper.seed=1",
            "hydra.sweeper.pruner=median", "hydra.sweeper.pruner_startup_trials=2", "data=digits",
            "trainer.epochs=2", "trainer.blas_threads=1", "trainer.early_stopping.restore_best=true",
            "optimizer.lr=tag(log, interval(0.00001, 1.0))", f"tracking.uri={sqlite_uri(tmp_path / 'mlflow.db')}"]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    client, runs = runs_of(sqlite_uri(tmp_path / "mlflow.db"))
    pruned = [r for r in runs if r.data.tags.get(names.STOP_REASON) == names.STOP_PRUNED]
    assert pruned, [r.data.tags.get(names.STOP_REASON) for r in runs]
    for run in pruned:
        run_dir = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
        saved = MLP.load(run_dir / "model.npz")
        assert np.isfinite(saved.params).all()
        curve = client.get_metric_history(run.info.run_id, names.VAL_LOSS)
        best = min(curve, key=lambda m: (m.value, m.step))
        assert run.data.metrics[names.BEST_VAL_LOSS] == pytest.approx(best.value, rel=1e-12)
        expected = retrain_until(OmegaConf.load(run_dir / "config.yaml"), best.step)
        np.testing.assert_array_equal(saved.params, expected.params)
        data = load_data(OmegaConf.load(run_dir / "config.yaml"))
        val_loss, _ = saved.evaluate(data.val.x, data.val.y)
        assert val_loss == pytest.approx(best.value, rel=1e-6)
        assert run.data.metrics[names.FINAL_VAL_LOSS] == pytest.approx(best.value, rel=1e-12)
