"""The search's figures (sweeper.reporting.study_plots) read back from the drawn matplotlib objects: pruned trials are
in the history, marked; labels carry 4 significant digits; the figures have the project's size and resolution."""
from __future__ import annotations

import re

import pytest

from sweeper import names
from sweeper.reporting.plots import DPI, FIGSIZE

LONG_NUMBER = re.compile(r"\d\.\d{5,}|\d{6,}")  # more than 4-5 significant digits


@pytest.fixture
def study():
    """5 finished trials: 3 complete (0.5, 0.25, 0.4), 2 pruned after reporting 0.9 and 1.1 at step 54."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", direction="minimize")
    space = {"optimizer.lr": FloatDistribution(0.003, 0.3, log=True),
             "model.width": CategoricalDistribution([32, 64])}
    lrs = [0.015676677195506071, 0.2172829919827349, 0.0041238765234, 0.123456789123, 0.0987654321098]
    for number, (lr, outcome) in enumerate(zip(lrs, [0.5, 0.25, 0.4, 0.9, 1.1])):
        study.enqueue_trial({"optimizer.lr": lr, "model.width": 32 if number % 2 else 64})
        trial = study.ask(space)
        if number < 3:
            study.tell(trial, outcome)
        else:
            trial.report(outcome, 54)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return study


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text") and o.get_text())]


def test_the_history_shows_pruned_trials_marked_at_their_last_value_and_the_best_so_far(study):
    from sweeper.reporting.study_plots import PRUNED_LABEL, history_figure

    fig = history_figure(study, names.BEST_VAL_LOSS)
    [ax] = fig.axes
    drawn = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
    assert drawn[PRUNED_LABEL] == [[3, 0.9], [4, 1.1]]
    assert drawn[f"complete ({names.BEST_VAL_LOSS})"] == [[0, 0.5], [1, 0.25], [2, 0.4]]
    [best] = ax.get_lines()
    assert best.get_ydata().tolist() == [0.5, 0.25, 0.25]
    assert "3 complete, 2 pruned" in ax.get_title()
    assert tuple(fig.get_size_inches()) == FIGSIZE and fig.dpi == DPI


def test_parallel_coordinates_and_slice_label_values_with_4_significant_digits(study, tmp_path):
    import optuna

    from sweeper.reporting.study_plots import parallel_figure, plot_study, slice_figure

    fig = parallel_figure(study, names.BEST_VAL_LOSS)
    [ax] = fig.axes
    labels = texts(fig) + [t.get_text() for t in ax.get_xticklabels()]
    assert "0.003" in labels and "0.3" in labels and {"32", "64", names.BEST_VAL_LOSS} <= set(labels)
    assert not [text for text in labels if LONG_NUMBER.search(text)], labels
    assert sum(line.get_linestyle() == "--" for line in ax.get_lines()) == 2  # the pruned trials
    written = plot_study(study, tmp_path, names.BEST_VAL_LOSS)
    assert [p.name for p in written] == [names.OPTIMIZATION_HISTORY, names.PARALLEL_COORDINATES]

    one = optuna.create_study(study_name="one", direction="minimize")
    for lr, loss in ((0.015676677195506071, 0.3), (0.2172829919827349, 0.2)):
        one.enqueue_trial({"optimizer.lr": lr})
        one.tell(one.ask({"optimizer.lr": optuna.distributions.FloatDistribution(0.003, 0.3, log=True)}), loss)
    fig = slice_figure(one, names.BEST_VAL_LOSS)
    fig.canvas.draw()
    [ax] = fig.axes
    assert ax.get_xscale() == "log" and ax.collections[0].get_offsets().tolist() == [
        [0.015676677195506071, 0.3], [0.2172829919827349, 0.2]]
    shown = [t.get_text() for t in ax.get_xticklabels()] + texts(fig)
    assert not [text for text in shown if LONG_NUMBER.search(text)], shown
