"""Figures: PNG files of the right size, the moving average and the seed aggregation checked against hand values."""

from __future__ import annotations

import struct
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from sweeper.plots import (
    DPI,
    FIGSIZE,
    RunHistory,
    _loss_ylim,
    aggregate_curves,
    moving_average,
    plot_comparison,
    plot_curves,
)

from ..handshake import HANG

EXPECTED_PX = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def fake_history(num_steps=600, every=50, level=0.3, acc=0.9, seed=0) -> RunHistory:
    rng = np.random.default_rng(seed)
    steps = np.arange(num_steps)
    train_loss = (2.3 * np.exp(-steps / 100) + level + 0.05 * rng.random(num_steps)).astype(np.float32)
    val_steps = np.arange(0, num_steps, every)
    decay = np.exp(-val_steps / 100)
    return RunHistory(train_loss=train_loss, val_steps=val_steps, val_loss=2.3 * decay + level + 0.02,
                      val_accuracy=acc - 0.8 * decay, train_accuracy=acc + 0.02 - 0.8 * decay)


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


def test_plot_curves_writes_png_of_the_expected_size(tmp_path):
    path = plot_curves(fake_history(), tmp_path / "sub" / "curves.png", title="task2c")
    assert path.exists()
    assert png_size(path) == EXPECTED_PX


@pytest.mark.parametrize("case", ["diverged", "no_val", "one_val", "empty", "missing_train_acc"])
def test_plot_curves_degenerate_histories(tmp_path, case):
    h = fake_history(num_steps=300)
    if case == "diverged":
        h.train_loss = h.train_loss.astype(np.float64)
        h.train_loss[200:] = np.nan
        h.train_loss[150] = np.inf
        h.val_loss[-2:] = np.inf
    elif case == "no_val":
        h = RunHistory(train_loss=h.train_loss)
    elif case == "one_val":
        h = RunHistory(h.train_loss[:10], np.array([0]), np.array([2.3]), np.array([0.1]), np.array([0.12]))
    elif case == "empty":
        h = RunHistory()
    elif case == "missing_train_acc":
        h.train_accuracy = np.zeros(0)
    path = plot_curves(h, tmp_path / f"{case}.png")
    assert png_size(path) == EXPECTED_PX


def test_plot_curves_accepts_a_fit_result_like_object(tmp_path):
    h = fake_history()
    fit_result = SimpleNamespace(train_loss=h.train_loss, val_steps=h.val_steps, val_loss=h.val_loss,
                                 val_accuracy=h.val_accuracy, train_accuracy=h.train_accuracy, model=None)
    assert png_size(plot_curves(fit_result, tmp_path / "fit.png")) == EXPECTED_PX


def test_plot_comparison_with_seed_bands_and_unequal_lengths(tmp_path):
    groups = {
        "hidden_sizes=[32]": [fake_history(600, seed=s, level=0.35) for s in range(3)],
        "hidden_sizes=[64]": [fake_history(450 + 50 * s, seed=s, level=0.3) for s in range(2)],
        "hidden_sizes=[128]": fake_history(500, level=0.25),   # a single run, not a list
        "failed": [RunHistory()],
    }
    path = plot_comparison(groups, tmp_path / "comparison.png", title="width")
    assert png_size(path) == EXPECTED_PX
    assert png_size(plot_comparison([], tmp_path / "none.png")) == EXPECTED_PX
    many = [(f"run {i}", fake_history(200, seed=i)) for i in range(13)]  # more than the 10 default colours
    assert png_size(plot_comparison(many, tmp_path / "many.png", show_val_loss=False)) == EXPECTED_PX


def test_figures_do_not_touch_pyplot(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "import sweeper.plots as p, sweeper.summary, sweeper.report\n"
        f"p.plot_curves(p.RunHistory(np.ones(20)), {str(tmp_path / 'a.png')!r})\n"
        f"p.plot_comparison({{'a': p.RunHistory(np.ones(20))}}, {str(tmp_path / 'b.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=HANG)
