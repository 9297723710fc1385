"""Which setting matters? (sweeper/reporting/importance.py) on constructed sweeps, and on a real multirun."""
from __future__ import annotations

import itertools

import pytest

from sweeper import names
from sweeper.reporting.importance import MIN_CONFIGS, importance, importance_markdown
from sweeper.reporting.tables import Group, SummaryRow
from sweeper.reporting.verdict import Objective, judge

from ..sweeper_helpers import run_cli, runs_of, sqlite_uri

KEYS = ["optimizer.lr", "model.width", "model.activation", names.SEED_PARAM]


def grid(loss_of) -> list[Group]:
    """Every (lr, width, activation) config, two seeds each, with best val loss loss_of(lr, width, activation, seed)."""
    groups = []
    for lr, width, act in itertools.product(["0.001", "0.01", "0.1"], ["16", "64", "256"], ["tanh", "sigmoid"]):
        label = f"lr={lr} width={width} activation={act}"
        rows = [SummaryRow(run_name=f"{label} seed={s}", run_id=f"{label}-{s}", status="FINISHED", group=label,
                           swept={"optimizer.lr": lr, "model.width": width, "model.activation": act,
                                  names.SEED_PARAM: str(s)},
                           best_val_loss=loss_of(float(lr), int(width), act, s), seed=str(s)) for s in (0, 1)]
        groups.append(Group(label, label, rows))
    return groups


def found_in(groups: list[Group]):
    """The importances as a sweep's summary computes them: over the verdict's means, best/val_loss minimized."""
    return importance(groups, KEYS, judge(groups, Objective()), seed_key=names.SEED_PARAM)


def test_a_parameter_that_alone_decides_the_objective_gets_nearly_all_the_importance():
    lr_only = grid(lambda lr, width, act, seed: 1.0 / lr + 0.001 * seed)  # width and activation do nothing
    found = found_in(lr_only)
    assert found.params[0] == "optimizer.lr" and found.fanova["optimizer.lr"] > 0.95
    assert found.spearman["optimizer.lr"] == pytest.approx(-1.0)  # a larger lr, a lower loss, at every step
    assert found.spearman["model.activation"] is None  # categorical: no rank correlation
    assert found.n_configs == 18 and not found.notes and found.ped_anova is None  # 18 < 20 configs for PED-ANOVA
    assert found.fanova == found_in(lr_only).fanova  # seed 0
    by_activation = grid(lambda lr, width, act, seed: 1.0 if act == "tanh" else 2.0)
    assert found_in(by_activation).fanova["model.activation"] > 0.95


def test_a_small_sweep_says_so_and_a_flat_one_says_why_there_is_nothing():
    small = grid(lambda lr, width, act, seed: lr)[: MIN_CONFIGS - 1]
    found = found_in(small)
    assert any(f"only {MIN_CONFIGS - 1} configs" in note for note in found.notes)
    assert f"Note: only {MIN_CONFIGS - 1} configs" in importance_markdown(found, Objective())
    flat = found_in(grid(lambda lr, width, act, seed: 0.5))
    assert flat.fanova == {} and "could not be computed" in flat.notes[-1]
    assert found_in(grid(lambda *a: 1.0)[:1]) is None


@pytest.mark.slow
@pytest.mark.integration
def test_a_grid_logs_its_importances_on_the_parent(tmp_path):
    """README's example ("Which setting matters?"), as written."""
    proc = run_cli(["-m", "data=digits", "trainer.epochs=1", "optimizer.lr=0.0001,0.1", "model.width=8,16"],
                   tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = [l for l in proc.stdout.splitlines() if l.startswith("importance (fANOVA, 4 configs): ")]
    assert "only 4 configs" in line
    _, runs = runs_of(sqlite_uri(tmp_path / "outputs" / "mlflow.db"))
    (parent,) = [r for r in runs if names.SWEEP_CHILDREN in r.data.tags]
    values = {k: v for k, v in parent.data.metrics.items() if k.startswith(names.IMPORTANCE_PREFIX)}
    assert set(values) == {"importance/optimizer.lr", "importance/model.width"}
    assert sum(values.values()) == pytest.approx(1.0)
    client, _ = runs_of(sqlite_uri(tmp_path / "outputs" / "mlflow.db"))
    assert {"importance.png", names.PARALLEL_COORDINATES} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert any(l.startswith(f"{names.PARALLEL_COORDINATES}: ") for l in proc.stdout.splitlines())


def test_a_grid_draws_its_configs_as_parallel_coordinates_with_the_best_on_top():
    from sweeper.reporting.finalize import config_figure

    groups = grid(lambda lr, width, act, seed: 1.0 / lr + width / 1000 + (0.5 if act == "sigmoid" else 0.0))
    found = found_in(groups)
    name, fig = config_figure(found, Objective(), "sweep t")
    assert name == names.PARALLEL_COORDINATES
    [ax] = fig.axes
    # the axes: most important parameter first, the objective last
    assert [t.get_text() for t in ax.get_xticklabels()] == [*found.params, names.BEST_VAL_LOSS]
    assert found.params[0] == "optimizer.lr"
    configs = [line for line in ax.get_lines() if len(line.get_xdata()) == 4]  # not the vertical axis lines
    assert len(configs) == 18
    (best,) = [line for line in configs if line.get_label().startswith("best:")]
    order = [k.rsplit(".", 1)[-1] for k in found.params]
    values = {"lr": "0.1", "width": "16", "activation": "tanh"}
    assert best.get_label() == f"best: {', '.join(f'{k}={values[k]}' for k in order)} (10.02)"
    # lr 0.1 is the top of its log axis, tanh the top of the categorical one (sigmoid, tanh), width 16 the bottom;
    # the best objective is the bottom of its axis
    expected = {"optimizer.lr": 1.0, "model.activation": 1.0, "model.width": 0.0}
    assert list(best.get_ydata()) == pytest.approx([*(expected[k] for k in found.params), 0.0])
    assert best.get_linewidth() > max(line.get_linewidth() for line in configs if line is not best)
    shown = [t.get_text() for t in ax.texts]
    assert {"sigmoid", "tanh", "0.001", "0.1", "16", "256"} <= set(shown)
    # one swept key: the objective against it
    one = [g for g in grid(lambda lr, width, act, seed: 1.0 / lr) if g.rows[0].swept["model.width"] == "16"
           and g.rows[0].swept["model.activation"] == "tanh"]
    name, fig = config_figure(found_in(one), Objective(), "sweep t")
    assert name == names.SLICE_PLOT and fig.axes[0].get_xscale() == "log"
