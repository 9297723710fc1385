"""Figures: the plotted lines against hand values (moving average, seed mean ± std), labels and legends, and PNGs."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from sweeper.reporting.colours import PALETTE, config_colour, config_colours
from sweeper.reporting.history import RunHistory
from sweeper.reporting.plots import (
    FIGSIZE,
    LEGEND_ROW_INCHES,
    MAX_COLOURED,
    OTHERS_COLOUR,
    _loss_ylim,
    aggregate_curves,
    comparison_figure,
    curves_figure,
    moving_average,
    plot_comparison,
    plot_curves,
)

from ...handshake import HANG

TRAIN_LEGEND = "training loss (10-step moving average)"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def xy(line) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(line.get_xdata(), dtype=np.float64), np.asarray(line.get_ydata(), dtype=np.float64)


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def panel_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def fake_history(num_steps=600, every=50, level=0.3, acc=0.9, seed=0) -> RunHistory:
    rng = np.random.default_rng(seed)
    steps = np.arange(num_steps)
    train_loss = (2.3 * np.exp(-steps / 100) + level + 0.05 * rng.random(num_steps)).astype(np.float32)
    val_steps = np.arange(0, num_steps, every)
    decay = np.exp(-val_steps / 100)
    return RunHistory(train_loss=train_loss, val_steps=val_steps, val_loss=2.3 * decay + level + 0.02,
                      val_accuracy=acc - 0.8 * decay, train_accuracy=acc + 0.02 - 0.8 * decay)


def hand_history() -> RunHistory:
    """12 steps of training loss 1..12 and three validation points."""
    return RunHistory(train_loss=np.arange(1, 13, dtype=np.float32), val_steps=np.array([0, 5, 11]),
                      val_loss=np.array([2.0, 1.0, 0.5]), val_accuracy=np.array([0.1, 0.5, 0.8]),
                      train_accuracy=np.array([0.2, 0.6, 0.9]))


# ------------------------------------------------------------------------------------------------------ the numbers

def test_moving_average_matches_hand_computed_trailing_window():
    values = np.arange(1, 13, dtype=np.float32)  # 1..12
    expected = [1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6.5, 7.5]  # partial windows first, then mean of last 10
    np.testing.assert_allclose(moving_average(values), expected)
    np.testing.assert_allclose(moving_average([3, 0, 6, 3, 9], window=3), [3, 1.5, 3, 3, 6])
    np.testing.assert_allclose(moving_average([4, 2], window=1), [4, 2])
    assert moving_average([]).size == 0
    with pytest.raises(ValueError, match="window"):
        moving_average([1.0], window=0)


def test_moving_average_marks_windows_with_non_finite_values_and_recovers():
    out = moving_average([1.0, np.nan, 3.0, 5.0, np.inf, 7.0, 9.0], window=2)
    np.testing.assert_allclose(out, [1.0, np.nan, np.nan, 4.0, np.nan, np.nan, 8.0])


def test_aggregate_curves_mean_and_std_over_available_runs():
    steps, mean, std, count = aggregate_curves([
        ([0, 1, 2], [1.0, 2.0, 3.0]),
        ([0, 1], [3.0, 4.0]),             # stopped early
        ([0, 1, 2, 3], [5.0, 6.0, np.nan, 8.0]),  # a non-finite value counts as missing
    ])
    np.testing.assert_array_equal(steps, [0, 1, 2, 3])
    np.testing.assert_allclose(mean, [3.0, 4.0, 3.0, 8.0])
    np.testing.assert_allclose(std, [2.0, 2.0, 0.0, 0.0])  # sample std of (1, 3, 5) is 2
    np.testing.assert_array_equal(count, [3, 3, 1, 1])


def test_aggregate_curves_unaligned_steps_and_errors():
    steps, mean, std, count = aggregate_curves([([0, 125], [0.5, 0.7]), ([0, 100, 125], [0.7, 0.1, 0.9])])
    np.testing.assert_array_equal(steps, [0, 100, 125])
    np.testing.assert_allclose(mean, [0.6, 0.1, 0.8])
    np.testing.assert_allclose(std, [np.sqrt(0.02), 0.0, np.sqrt(0.02)])
    assert aggregate_curves([])[0].size == 0
    with pytest.raises(ValueError, match="differ in length"):
        aggregate_curves([([0, 1], [1.0])])


def test_loss_ylim_ignores_the_initial_spike():
    steps = np.arange(1000)
    loss = np.full(1000, 0.3)
    loss[:10] = 50.0
    bottom, top = _loss_ylim([(steps, loss)])
    assert bottom == 0.0
    assert 0.3 < top < 0.5


# ------------------------------------------------------------------------------------------------------ one run

def test_curves_figure_draws_the_moving_average_and_the_validation_points():
    fig = curves_figure(hand_history(), title="task2c baseline")
    ax_loss, ax_acc = fig.axes
    assert fig.get_suptitle() == "task2c baseline"
    assert (ax_loss.get_title(), ax_acc.get_title()) == ("loss", "accuracy")
    assert ax_loss.get_xlabel() == ax_acc.get_xlabel() == "training step"
    assert (ax_loss.get_ylabel(), ax_acc.get_ylabel()) == ("cross-entropy loss", "accuracy")

    train, val = ax_loss.lines
    np.testing.assert_array_equal(xy(train)[0], np.arange(12))
    np.testing.assert_allclose(xy(train)[1], [1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6.5, 7.5])
    np.testing.assert_array_equal(xy(val)[0], [0, 5, 11])
    np.testing.assert_allclose(xy(val)[1], [2.0, 1.0, 0.5])
    assert val.get_marker() == "o"  # few points stay visible
    assert legend_texts(ax_loss) == [TRAIN_LEGEND, "validation loss"]

    train_acc, val_acc = ax_acc.lines
    np.testing.assert_allclose(xy(train_acc)[1], [0.2, 0.6, 0.9])
    np.testing.assert_allclose(xy(val_acc)[1], [0.1, 0.5, 0.8])
    np.testing.assert_array_equal(xy(val_acc)[0], [0, 5, 11])
    assert legend_texts(ax_acc) == ["training accuracy", "validation accuracy"]
    # the accuracy range starts after the warm-up, and says what it leaves out
    assert panel_texts(ax_loss) == []
    assert ax_acc.get_ylim()[0] > 0.1 and panel_texts(ax_acc) == [
        f"accuracy below {ax_acc.get_ylim()[0]:.3g} cut off (min 0.1)"]


def test_curves_figure_accepts_a_fit_result_like_object():
    h = fake_history()
    fit_result = SimpleNamespace(train_loss=h.train_loss, val_steps=h.val_steps, val_loss=h.val_loss,
                                 val_accuracy=h.val_accuracy, train_accuracy=h.train_accuracy, model=None)
    ax_loss, ax_acc = curves_figure(fit_result).axes
    np.testing.assert_allclose(xy(ax_loss.lines[0])[1], moving_average(h.train_loss))
    np.testing.assert_allclose(xy(ax_acc.lines[1])[1], h.val_accuracy)
    assert xy(ax_loss.lines[0])[0].size == 600 and xy(ax_acc.lines[1])[0].size == 12
    assert ax_loss.lines[1].get_marker() == "o" and ax_acc.lines[0].get_marker() == "o"
    # the first 5 % of the steps do not set the scale: the first validation loss (2.62) is above the top, the
    # next one (step 50: 1.72) below it
    bottom, top = ax_loss.get_ylim()
    assert bottom == 0.0 and h.val_loss[1] < top < h.val_loss[0]


def test_curves_figure_of_a_diverged_run_ends_the_curve_and_says_so():
    h = fake_history(num_steps=300)
    h.train_loss = h.train_loss.astype(np.float64)
    h.train_loss[200:] = np.nan
    h.train_loss[150] = np.inf
    h.val_loss[-2:] = np.inf
    ax_loss, _ = curves_figure(h).axes
    smoothed = xy(ax_loss.lines[0])[1]
    finite = np.isfinite(smoothed)
    # a window holding the inf at step 150 (steps 150..159) and every step from 200 on give NaN
    np.testing.assert_array_equal(np.flatnonzero(~finite), np.r_[150:160, 200:300])
    np.testing.assert_allclose(smoothed[160:200], moving_average(h.train_loss[:200])[160:200])
    assert "non-finite values (diverged)" in panel_texts(ax_loss)
    assert np.isinf(xy(ax_loss.lines[1])[1][-2:]).all()


@pytest.mark.parametrize("case", ["no_val", "one_val", "empty", "missing_train_acc"])
def test_curves_figure_of_degenerate_histories(case):
    h = fake_history(num_steps=300)
    if case == "no_val":
        h = RunHistory(train_loss=h.train_loss)
    elif case == "one_val":
        h = RunHistory(h.train_loss[:10], np.array([0]), np.array([2.3]), np.array([0.1]), np.array([0.12]))
    elif case == "empty":
        h = RunHistory()
    elif case == "missing_train_acc":
        h.train_accuracy = np.zeros(0)
    ax_loss, ax_acc = curves_figure(h).axes
    if case == "no_val":
        assert len(ax_loss.lines) == 1 and len(ax_acc.lines) == 0
        assert panel_texts(ax_acc) == ["no validation points"]
    elif case == "one_val":
        val = ax_loss.lines[1]
        assert xy(val) == (pytest.approx([0.0]), pytest.approx([2.3])) and val.get_marker() == "o"
        assert [xy(line)[1][0] for line in ax_acc.lines] == pytest.approx([0.12, 0.1])
    elif case == "empty":
        assert len(ax_loss.lines) == len(ax_acc.lines) == 0
        assert panel_texts(ax_loss) == ["no training metrics"] and panel_texts(ax_acc) == ["no validation points"]
        assert legend_texts(ax_loss) == legend_texts(ax_acc) == []
    else:  # a missing metric becomes a NaN line; the others are drawn as logged
        train_acc, val_acc = ax_acc.lines
        assert np.isnan(xy(train_acc)[1]).all() and xy(train_acc)[1].size == h.val_steps.size
        np.testing.assert_allclose(xy(val_acc)[1], h.val_accuracy)


# ------------------------------------------------------------------------------------------------------ comparison

def test_comparison_figure_draws_the_seed_mean_with_a_std_band():
    long = RunHistory(train_loss=np.full(4, 4.0), val_steps=np.array([0, 2]), val_loss=np.array([3.0, 1.0]),
                      val_accuracy=np.array([0.5, 0.7]), train_accuracy=np.array([0.5, 0.7]))
    short = RunHistory(train_loss=np.full(2, 2.0), val_steps=np.array([0]), val_loss=np.array([2.0]),
                       val_accuracy=np.array([0.9]), train_accuracy=np.array([0.9]))  # stopped early
    single = RunHistory(train_loss=np.array([1.0, 3.0]), val_steps=np.array([1]), val_loss=np.array([0.4]),
                        val_accuracy=np.array([0.95]), train_accuracy=np.array([0.96]))
    groups = {"hidden_sizes=[32]": [long, short], "hidden_sizes=[128]": single, "failed": [RunHistory()]}
    fig = comparison_figure(groups, title="width")
    ax_loss, ax_acc = fig.axes
    assert fig.get_suptitle() == "width"

    seeds_train, seeds_val, single_train, single_val = ax_loss.lines  # the failed group draws nothing
    np.testing.assert_array_equal(xy(seeds_train)[0], [0, 1, 2, 3])
    np.testing.assert_allclose(xy(seeds_train)[1], [3.0, 3.0, 4.0, 4.0])  # mean over the runs at each step
    np.testing.assert_allclose(xy(seeds_val)[1], [2.5, 1.0])
    np.testing.assert_allclose(xy(single_train)[1], [1.0, 2.0])  # the moving average of one run
    np.testing.assert_allclose(xy(single_val)[1], [0.4])
    # validation loss solid and bold above the thin, light training loss
    for train, val in ((seeds_train, seeds_val), (single_train, single_val)):
        assert val.get_linestyle() == train.get_linestyle() == "-"
        assert val.get_linewidth() > train.get_linewidth() and val.get_zorder() > train.get_zorder()
        assert val.get_alpha() is None and train.get_alpha() < 0.5
    assert legend_texts(ax_loss) == ["validation loss", "training loss"]

    # the seed band is drawn around the validation loss: std of (3, 2) at step 0 is 1/sqrt(2)
    band = ax_loss.collections[0].get_paths()[0].vertices[:, 1]
    assert (band.min(), band.max()) == (pytest.approx(1.0), pytest.approx(2.5 + np.sqrt(0.5)))
    assert len(ax_loss.collections) == len(ax_acc.collections) == 1  # a single run has no band

    seeds_acc, single_acc = ax_acc.lines
    np.testing.assert_allclose(xy(seeds_acc)[1], [0.7, 0.7])  # (0.5 + 0.9) / 2 at step 0, then only the long run
    np.testing.assert_allclose(xy(single_acc)[1], [0.95])
    # the legend names the config and how many seeds were averaged, never one seed
    assert legend_texts(ax_acc) == ["hidden_sizes=[32] (mean ± std over 2 seeds)", "hidden_sizes=[128]"]
    assert ax_loss.get_title() == "validation loss (solid), training loss (10-step moving average, light)"
    assert ax_acc.get_title() == "validation accuracy"

    # each group keeps one colour across its curves, and the groups differ
    colours = [to_rgba(line.get_color()) for line in (seeds_train, seeds_val, seeds_acc)]
    assert colours[0] == colours[1] == colours[2] != to_rgba(single_train.get_color())
    assert to_rgba(single_acc.get_color()) == to_rgba(config_colours(["hidden_sizes=[32]", "hidden_sizes=[128]"])[
        "hidden_sizes=[128]"])


def test_a_y_range_that_cuts_off_values_says_so():
    # a loss that starts at 5 and settles at 0.3: the loss range is set from the values after the warm-up
    history = fake_history(600, level=0.3)
    history.train_loss[:3] = 5.0
    ax_loss, ax_acc = comparison_figure({"a": history}).axes
    top = ax_loss.get_ylim()[1]
    assert top < 5.0
    (note,) = panel_texts(ax_loss)
    assert note == f"loss above {top:.3g} cut off (max {max(xy(l)[1].max() for l in ax_loss.lines):.3g})"
    # nothing is cut off: no note
    flat = RunHistory(train_loss=np.full(100, 0.5), val_steps=np.array([10, 50, 90]),
                      val_loss=np.array([0.5, 0.5, 0.5]), val_accuracy=np.array([0.8, 0.8, 0.8]),
                      train_accuracy=np.array([0.8, 0.8, 0.8]))
    ax_loss, ax_acc = comparison_figure({"flat": flat}).axes
    assert panel_texts(ax_loss) == panel_texts(ax_acc) == []


def test_comparison_figure_without_validation_loss_names_every_group_up_to_eight():
    few = [(f"run {i}", fake_history(200, seed=i)) for i in range(MAX_COLOURED)]
    fig = comparison_figure(few, show_val_loss=False)
    ax_loss, ax_acc = fig.axes
    assert len(ax_loss.lines) == MAX_COLOURED and all(line.get_alpha() == 1.0 for line in ax_loss.lines)
    assert ax_loss.get_title() == "training loss (10-step moving average)"
    assert len({to_rgba(line.get_color()) for line in ax_acc.lines}) == MAX_COLOURED
    assert legend_texts(ax_acc) == [f"run {i}" for i in range(MAX_COLOURED)] and not fig.legends


def test_a_comparison_of_many_configs_colours_the_best_eight_and_greys_the_rest():
    """30 configs (the experiment-wide comparison): 30 legend entries squashed the panels into a strip."""
    levels = np.random.default_rng(0).permutation(30) / 100  # config i's loss settles at 0.3 + levels[i]
    many = [(f"lr={i}", fake_history(200, level=0.3 + levels[i], seed=i)) for i in range(30)]
    fig = comparison_figure(many)
    ax_loss, ax_acc = fig.axes
    assert ax_acc.get_legend() is None
    (legend,) = fig.legends
    best = [f"lr={i}" for i in np.argsort(levels)[:MAX_COLOURED]]
    assert [t.get_text() for t in legend.get_texts()] == [*best, "22 other configs (grey)"]
    # every config is still drawn: the 22 others grey, thin, behind the best, and out of the legend
    by_label = {line.get_label().lstrip("_"): line for line in ax_acc.lines}
    assert sorted(by_label) == sorted(label for label, _ in many)
    grey = [label for label, line in by_label.items() if to_rgba(line.get_color()) == to_rgba(OTHERS_COLOUR)]
    assert sorted(grey) == sorted(set(by_label) - set(best))
    assert all(by_label[g].get_zorder() < by_label[b].get_zorder() for g in grey for b in best)
    assert len({to_rgba(by_label[b].get_color()) for b in best}) == MAX_COLOURED
    assert ax_acc.get_title() == "validation accuracy; in colour the best 8 of 30 configs by validation loss"
    # the legend sits below the panels, which keep their full width: the figure grows by the legend's 3 rows
    fig.canvas.draw()
    legend_top = legend.get_window_extent().y1
    assert all(ax.get_window_extent().y0 > legend_top for ax in (ax_loss, ax_acc))
    assert ax_acc.get_window_extent().width > 0.4 * fig.bbox.width
    assert fig.get_figheight() == pytest.approx(FIGSIZE[1] + 3 * LEGEND_ROW_INCHES)


def test_a_config_past_the_palette_keeps_a_colour_of_its_own():
    colours = [config_colour(i) for i in range(1000)]
    assert len(set(colours)) == 1000 and colours[:20] == list(PALETTE)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours)


def test_comparison_figure_of_nothing():
    ax_loss, ax_acc = comparison_figure([]).axes
    assert len(ax_loss.lines) == len(ax_acc.lines) == 0
    assert panel_texts(ax_loss) == ["no metrics"] and panel_texts(ax_acc) == ["no validation points"]


# ------------------------------------------------------------------------------------------------------ files

def test_plot_functions_write_png_files(tmp_path):
    """1440 x 552 px: 12 x 4.6 inches at 120 dpi, readable on a slide."""
    path = plot_curves(fake_history(), tmp_path / "sub" / "curves.png", title="task2c")
    assert path == tmp_path / "sub" / "curves.png" and png_size(path) == (1440, 552)
    path = plot_comparison({"a": fake_history(), "b": [fake_history(seed=1), fake_history(seed=2)]},
                           tmp_path / "comparison.png")
    assert png_size(path) == (1440, 552)


def test_figures_do_not_touch_pyplot(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "import sweeper.reporting.plots as p, sweeper.reporting.finalize, sweeper.reporting.report\n"
        "import sweeper.reporting.cli\n"
        "from sweeper.reporting.history import RunHistory\n"
        f"p.plot_curves(RunHistory(np.ones(20)), {str(tmp_path / 'a.png')!r})\n"
        f"p.plot_comparison({{'a': RunHistory(np.ones(20))}}, {str(tmp_path / 'b.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=HANG)
