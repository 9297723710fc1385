"""Figures in the course's style, drawn on `matplotlib.figure.Figure` objects (Agg canvas, no pyplot state).

- `curves_figure`: one run, two panels. Left: training loss as a 10-step trailing moving average plus validation
  loss vs step. Right: training and validation accuracy vs step.
- `comparison_figure`: one colour per group (one config: a run, or its seeds). Left: validation loss solid and the
  smoothed training loss thin and light. Right: validation accuracy. A group holding several runs is drawn
  as its mean with a +-1 std band (see `aggregate_curves` for how runs of different lengths are combined). With many
  groups only the best few are coloured and named; the rest are grey.

Both return the Figure; `save_figure` writes it as a PNG, and `plot_curves` / `plot_comparison` do both.
A "history" is any object with the attributes of mlp_core's `FitResult` that matter here: `train_loss` (per step,
step = index), `val_steps`, `val_loss`, `val_accuracy`, `train_accuracy` (one value per validation point), such as
`sweeper.reporting.history.RunHistory`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SMOOTHING_WINDOW = 10  # SPEC: training loss is shown as a 10-step moving average
DPI = 120
FIGSIZE = (12.0, 4.6)  # inches -> 1440 x 552 px at DPI 120
# The first part of a run (loss falling from ~2.3 or more) would flatten the rest of the loss panel; the y-limits are
# computed from the values after this fraction of the steps.
_WARMUP_FRACTION = 0.05
# More configs than this in one comparison: the best ones in colour, the rest in grey (30 legend entries squash the
# panels into a strip, and 30 colours are not told apart anyway).
MAX_COLOURED = 8
OTHERS_COLOUR = "#c8c8c8"
LEGEND_ROW_INCHES = 0.22


def moving_average(values: Any, window: int = SMOOTHING_WINDOW) -> np.ndarray:
    """Trailing moving average: out[t] = mean(values[max(0, t - window + 1) : t + 1]).

    The first `window - 1` points average over the steps available so far, so the curve starts at step 0.
    A window containing a non-finite value (a diverged step) gives NaN, so divergence shows as the curve ending
    instead of a poisoned mean that never recovers. Returns float64 of the same length.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return x.copy()
    finite = np.isfinite(x)
    sums = np.concatenate(([0.0], np.cumsum(np.where(finite, x, 0.0))))
    bad = np.concatenate(([0], np.cumsum(~finite)))
    end = np.arange(1, x.size + 1)
    start = np.maximum(end - window, 0)
    counts = end - start
    out = (sums[end] - sums[start]) / counts
    out[(bad[end] - bad[start]) > 0] = np.nan
    return out


def aggregate_curves(curves: Sequence[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over runs (e.g. seeds) of curves that may have different lengths and step sets.

    curves: [(steps, values), ...], one pair of equal-length 1-D arrays per run.
    Returns (steps, mean, std, count) over the union of all steps. At each step the mean is over the runs that have a
    finite value there ("mean over available runs"): a run that stopped early (early stopping) simply stops
    contributing, so the curve extends to the longest run and `count` tells how many runs each point rests on.
    Non-finite values (a diverged run) count as missing. std is the sample std (ddof=1) where count >= 2, else 0.
    Steps where no run has a finite value are dropped.
    """
    cleaned = []
    for steps, values in curves:
        s = np.asarray(steps, dtype=np.int64).ravel()
        v = np.asarray(values, dtype=np.float64).ravel()
        if s.shape != v.shape:
            raise ValueError(f"steps and values differ in length: {s.shape} vs {v.shape}")
        cleaned.append((s, v))
    if not cleaned:
        empty = np.zeros(0)
        return empty.astype(np.int64), empty, empty, empty.astype(np.int64)
    all_steps = np.unique(np.concatenate([s for s, _ in cleaned]))
    table = np.full((len(cleaned), all_steps.size), np.nan)
    for i, (s, v) in enumerate(cleaned):
        table[i, np.searchsorted(all_steps, s)] = v
    table[~np.isfinite(table)] = np.nan
    count = np.sum(~np.isnan(table), axis=0)
    keep = count > 0
    table, all_steps, count = table[:, keep], all_steps[keep], count[keep]
    total = np.nansum(table, axis=0)
    mean = total / count
    sq = np.nansum((table - mean) ** 2, axis=0)
    std = np.zeros_like(mean)
    multi = count >= 2
    std[multi] = np.sqrt(sq[multi] / (count[multi] - 1))
    return all_steps, mean, std, count.astype(np.int64)


def _arrays(history: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train_loss = np.asarray(getattr(history, "train_loss", np.zeros(0)), dtype=np.float64).ravel()
    val_steps = np.asarray(getattr(history, "val_steps", np.zeros(0)), dtype=np.int64).ravel()

    def per_point(name: str) -> np.ndarray:
        arr = np.asarray(getattr(history, name, np.zeros(0)), dtype=np.float64).ravel()
        if arr.size != val_steps.size:  # a missing metric must not break the others
            return np.full(val_steps.size, np.nan)
        return arr

    return train_loss, val_steps, per_point("val_loss"), per_point("val_accuracy"), per_point("train_accuracy")


def _after_warmup(steps: np.ndarray, values: np.ndarray, last_step: float) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    tail = values[steps >= _WARMUP_FRACTION * last_step]
    tail = tail[np.isfinite(tail)]
    if tail.size == 0:
        tail = values[np.isfinite(values)]
    return tail


def _tail_values(series: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """All values of every series after its warm-up, or None when there are none."""
    last_step = max((float(s[-1]) for s, _ in series if len(s)), default=0.0)
    tails = [_after_warmup(s, v, last_step) for s, v in series if len(s)]
    tails = [t for t in tails if t.size]
    return np.concatenate(tails) if tails else None


def _loss_ylim(series: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float] | None:
    """Y-limits of a loss panel: 0 to a little above the largest value after the warm-up.

    The 99.5th percentile of the smoothed values keeps a single late spike of one run from setting the scale.
    """
    values = _tail_values(series)
    if values is None:
        return None
    top = float(np.percentile(values, 99.5))
    bottom = min(0.0, float(values.min()))
    if not math.isfinite(top) or top <= bottom:
        top = bottom + 1.0
    return bottom, top * 1.1 if top > 0 else top + 0.1


def _accuracy_ylim(series: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float] | None:
    values = _tail_values(series)
    if values is None:
        return None
    low, high = float(values.min()), float(values.max())
    span = max(high - low, 0.02)
    return max(0.0, low - 0.1 * span), min(1.0, high + 0.1 * span) + 0.005


def _new_figure(fixed: bool = False) -> tuple[Figure, Any, Any]:
    """Two panels; ``fixed`` margins for a run's figure (constrained layout: half its cost, docs/decisions.md)."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout=None if fixed else "constrained")
    if fixed:
        fig.subplots_adjust(left=0.055, right=0.99, bottom=0.1, top=0.85, wspace=0.16)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, ylabel in ((ax_loss, "cross-entropy loss"), (ax_acc, "accuracy")):
        ax.set(xlabel="training step", ylabel=ylabel)
        ax.grid(True, alpha=0.3)
    return fig, ax_loss, ax_acc


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG to `path` (parent directories created) and return the path."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return Path(path)


def _marker(n_points: int) -> str | None:
    return "o" if n_points <= 20 else None  # few points (or a single one) must stay visible


def _clip_note(ax: Any, ylim: tuple[float, float] | None, series: Sequence[tuple[np.ndarray, np.ndarray]],
               what: str, top: float = 0.98) -> None:
    """Say in the panel when the y-range leaves out plotted values (the start of training, a late spike)."""
    if ylim is None:
        return
    values = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in series]) if series else np.zeros(0)
    values = values[np.isfinite(values)]
    notes = []
    if values.size and values.max() > ylim[1]:
        notes.append(f"{what} above {ylim[1]:.3g} cut off (max {values.max():.3g})")
    if values.size and values.min() < ylim[0]:
        notes.append(f"{what} below {ylim[0]:.3g} cut off (min {values.min():.3g})")
    if notes:
        ax.text(0.99, top, "\n".join(notes), ha="right", va="top", transform=ax.transAxes, color="0.35", fontsize=8)


def curves_figure(history: Any, title: str | None = None) -> Figure:
    """The course's two-panel figure of one run.

    axes[0]: training loss as a 10-step trailing moving average, and validation loss vs step. axes[1]: training and
    validation accuracy vs step. Copes with diverged runs (NaN/inf), runs with no or one validation point, and empty
    histories.
    """
    train_loss, val_steps, val_loss, val_acc, train_acc = _arrays(history)
    fig, ax_loss, ax_acc = _new_figure(fixed=True)
    if title:
        fig.suptitle(title)

    loss_series = []
    if train_loss.size:
        steps = np.arange(train_loss.size)
        smoothed = moving_average(train_loss)
        ax_loss.plot(steps, smoothed, color="C0", lw=1.2,
                     label=f"training loss ({SMOOTHING_WINDOW}-step moving average)")
        loss_series.append((steps, smoothed))
    if val_steps.size:
        ax_loss.plot(val_steps, val_loss, color="C1", lw=1.6, marker=_marker(val_steps.size), label="validation loss")
        loss_series.append((val_steps, val_loss))
        ax_acc.plot(val_steps, train_acc, color="C0", lw=1.6, marker=_marker(val_steps.size),
                    label="training accuracy")
        ax_acc.plot(val_steps, val_acc, color="C1", lw=1.6, marker=_marker(val_steps.size),
                    label="validation accuracy")
        ylim = _accuracy_ylim([(val_steps, train_acc), (val_steps, val_acc)])
        if ylim:
            ax_acc.set_ylim(*ylim)
            _clip_note(ax_acc, ylim, [(val_steps, train_acc), (val_steps, val_acc)], "accuracy", top=0.5)
    else:
        ax_acc.text(0.5, 0.5, "no validation points", ha="center", va="center", transform=ax_acc.transAxes,
                    color="0.4")
    if not loss_series:
        ax_loss.text(0.5, 0.5, "no training metrics", ha="center", va="center", transform=ax_loss.transAxes,
                     color="0.4")
    ylim = _loss_ylim(loss_series)
    if ylim:
        ax_loss.set_ylim(*ylim)
        _clip_note(ax_loss, ylim, loss_series, "loss", top=0.9)
    if not np.all(np.isfinite(train_loss)) or not np.all(np.isfinite(val_loss)):
        ax_loss.text(0.99, 0.98, "non-finite values (diverged)", ha="right", va="top", transform=ax_loss.transAxes,
                     color="C3", fontsize=9)
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=9)
    return fig


def plot_curves(history: Any, path: str | Path, title: str | None = None) -> Path:
    """`curves_figure` written as a PNG to `path`; returns the path."""
    return save_figure(curves_figure(history, title), path)


def _normalise_groups(groups: Any) -> list[tuple[str, list[Any]]]:
    items = groups.items() if isinstance(groups, Mapping) else groups
    out = []
    for label, members in items:
        if not isinstance(members, (list, tuple)):
            members = [members]
        out.append((str(label), list(members)))
    return out


def group_legend(label: str, n_runs: int) -> str:
    """A group of several runs (the seeds of one config) is drawn as a mean: the legend says over how many seeds,
    never which seed."""
    return label if n_runs == 1 else f"{label} (mean ± std over {n_runs} seeds)"


def comparison_figure(groups: Any, title: str | None = None, show_val_loss: bool = True,
                      colors: Mapping[str, Any] | None = None) -> Figure:
    """One colour per group, overlaid.

    groups: mapping label -> history or list of histories (or a sequence of (label, histories) pairs). The label is
    shown in the legend, so callers pass what varies, e.g. "hidden_sizes=[128]". A group with several histories
    (the seeds of one config) is drawn as its mean with a +-1 std band, aggregated by `aggregate_curves` (mean over
    the runs available at each step); the legend then says over how many seeds. colors: label -> colour (default
    `config_colours` in group order).
    axes[0]: per group its validation loss (solid, if `show_val_loss`) and its smoothed training loss (thin and
    light, so the noisy training curves do not hide the validation ones); a small legend names the two styles.
    axes[1]: validation accuracy, with the groups' legend. A group without any curve (a run that failed early) draws
    nothing. A y-range that leaves out values says so in the panel.
    More than MAX_COLOURED groups: the MAX_COLOURED with the lowest validation loss keep their colour, named in a
    legend below the panels (best first); the others are thin and grey behind them, labelled `_<legend>`.
    """
    from matplotlib.lines import Line2D

    from .colours import config_colours

    items = _normalise_groups(groups)
    colors = {**config_colours([label for label, _ in items]), **(colors or {})}
    highlighted = _highlighted(items, show_val_loss)
    fig, ax_loss, ax_acc = _new_figure()
    if title:
        fig.suptitle(title)
    loss_series, acc_series = [], []
    drawn: set[str] = set()
    for label, members in items:
        shown = label in highlighted
        color = colors[label] if shown else OTHERS_COLOUR
        arrays = [_arrays(h) for h in members]
        n_runs = len(arrays)
        # a grey curve stays out of the legend ("_" labels are left out) and behind the coloured ones
        legend, lift = (group_legend(label, n_runs), 0) if shown else ("_" + group_legend(label, n_runs), -10)
        train = aggregate_curves([(np.arange(a[0].size), moving_average(a[0])) for a in arrays if a[0].size])
        if train[0].size:
            drawn.add(label)
            ax_loss.plot(train[0], train[1], color=color, lw=0.8, alpha=0.45 if show_val_loss else 1.0,
                         label="_" + legend, zorder=1 + lift)
            loss_series.append((train[0], train[1]))
        valid = [a for a in arrays if a[1].size]
        if valid:
            drawn.add(label)
            vloss = aggregate_curves([(a[1], a[2]) for a in valid])
            vacc = aggregate_curves([(a[1], a[3]) for a in valid])
            band = n_runs > 1 and shown
            if show_val_loss and vloss[0].size:
                ax_loss.plot(vloss[0], vloss[1], color=color, lw=1.8 if shown else 1.0, marker=_marker(vloss[0].size),
                             markersize=3, label="_" + legend, zorder=3 + lift)
                if band:
                    ax_loss.fill_between(vloss[0], vloss[1] - vloss[2], vloss[1] + vloss[2], color=color,
                                         alpha=0.2, lw=0, zorder=2)
                loss_series.append((vloss[0], vloss[1]))
            if vacc[0].size:
                ax_acc.plot(vacc[0], vacc[1], color=color, lw=1.4 if shown else 1.0, marker=_marker(vacc[0].size),
                            markersize=3, label=legend, zorder=2 + lift)
                if band:
                    ax_acc.fill_between(vacc[0], vacc[1] - vacc[2], vacc[1] + vacc[2], color=color, alpha=0.2, lw=0)
                acc_series.append((vacc[0], vacc[1]))
    ylim = _loss_ylim(loss_series)
    if ylim:
        ax_loss.set_ylim(*ylim)
        _clip_note(ax_loss, ylim, loss_series, "loss")
    ylim = _accuracy_ylim(acc_series)
    if ylim:
        ax_acc.set_ylim(*ylim)
        _clip_note(ax_acc, ylim, acc_series, "accuracy")
    ax_loss.set_title(f"validation loss (solid), training loss ({SMOOTHING_WINDOW}-step moving average, light)"
                      if show_val_loss else f"training loss ({SMOOTHING_WINDOW}-step moving average)", fontsize=10)
    ax_acc.set_title("validation accuracy", fontsize=10)
    if loss_series and show_val_loss:
        ax_loss.legend(handles=[Line2D([], [], color="0.2", lw=1.8, label="validation loss"),
                                Line2D([], [], color="0.2", lw=0.8, alpha=0.45, label="training loss")],
                       loc="lower left", fontsize=8)
    if not loss_series:
        ax_loss.text(0.5, 0.5, "no metrics", ha="center", va="center", transform=ax_loss.transAxes, color="0.4")
    if not acc_series:
        ax_acc.text(0.5, 0.5, "no validation points", ha="center", va="center", transform=ax_acc.transAxes,
                    color="0.4")
    if len(highlighted) < len(items):
        _legend_of_the_best(fig, ax_acc, items, highlighted, colors, drawn)
    elif ax_acc.get_legend_handles_labels()[0]:
        ax_acc.legend(loc="lower right", fontsize=9)
    elif not show_val_loss and loss_series:
        ax_loss.legend(handles=[Line2D([], [], color=colors[label], label=group_legend(label, len(members)))
                                for label, members in items], loc="upper right", fontsize=9)
    return fig


def _legend_of_the_best(fig: Figure, ax_acc: Any, items: Sequence[tuple[str, list[Any]]],
                        highlighted: Mapping[str, int], colors: Mapping[str, Any], drawn: set[str]) -> None:
    """Many configs: the coloured ones in a legend below the panels, best first, and one entry for the grey rest."""
    from matplotlib.lines import Line2D

    sizes = dict(items)
    best = sorted((label for label in highlighted if label in drawn), key=highlighted.__getitem__)
    handles = [Line2D([], [], color=colors[label], lw=1.4, label=group_legend(label, len(sizes[label])))
               for label in best]
    others = len(items) - len(highlighted)
    handles.append(Line2D([], [], color=OTHERS_COLOUR, lw=1.0,
                          label=f"{others} other config{'s' if others > 1 else ''} (grey)"))
    # as many columns as the longest label leaves room for (an 8-pt character is about 0.07 inch wide)
    longest = max(len(h.get_label()) for h in handles)
    columns = max(1, min(3, len(handles), int(FIGSIZE[0] / (0.07 * longest + 0.8))))
    fig.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize=8)
    fig.set_figheight(FIGSIZE[1] + LEGEND_ROW_INCHES * math.ceil(len(handles) / columns))
    ax_acc.set_title(f"validation accuracy; in colour the best {len(highlighted)} of {len(items)} configs by "
                     "validation loss", fontsize=10)


def _highlighted(items: Sequence[tuple[str, list[Any]]], by_val_loss: bool) -> dict[str, int]:
    """{label: rank} of the groups drawn in colour: all of them when there are at most MAX_COLOURED, else the
    MAX_COLOURED with the lowest validation loss (the objective; with `by_val_loss` off, the lowest smoothed
    training loss), best first. A group without that value ranks last."""
    if len(items) <= MAX_COLOURED:
        return {label: rank for rank, (label, _) in enumerate(items)}

    def best(members: Sequence[Any]) -> float:
        values = []
        for h in members:
            train_loss, val_steps, val_loss, _, _ = _arrays(h)
            values.append(val_loss if by_val_loss else moving_average(train_loss))
        values = np.concatenate(values) if values else np.zeros(0)
        values = values[np.isfinite(values)]
        return float(values.min()) if values.size else math.inf

    scores = [(best(members), i, label) for i, (label, members) in enumerate(items)]
    return {label: rank for rank, (_, _, label) in enumerate(sorted(scores)[:MAX_COLOURED])}


def plot_comparison(groups: Any, path: str | Path, title: str | None = None, show_val_loss: bool = True,
                    colors: Mapping[str, Any] | None = None) -> Path:
    """`comparison_figure` written as a PNG to `path`; returns the path."""
    return save_figure(comparison_figure(groups, title, show_val_loss, colors), path)
