"""Figures of an Optuna study for the search's parent run, in the style of the run and sweep figures (the size,
resolution, grid and PNG writer of ``sweeper.reporting.plots``); numbers in labels carry 4 significant digits.

- ``optimization_history.png``: each trial's objective by trial number and the best so far. A pruned trial is drawn
  too, hollow, at the last value it reported before it was stopped (the curve the pruner judged: for a ``best/...``
  objective, the same best-so-far value its run's summary metric holds).
- ``slice.png`` (one searched parameter) or ``parallel_coordinates.png`` (two or more): how the objective depends on
  the parameters; complete trials are coloured by their objective, pruned ones drawn light and dashed.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sweeper import names
from sweeper.reporting.plots import DPI, FIGSIZE, save_figure

PRUNED_LABEL = "pruned (last value reported)"


@dataclass(frozen=True)
class TrialPoint:
    number: int
    value: float
    pruned: bool
    params: dict[str, Any]


def short(value: Any) -> str:
    """A number with 4 significant digits (``0.01568``), anything else as is."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trial_points(study: Any) -> list[TrialPoint]:
    """Complete trials with their objective and pruned ones with their last reported value, by trial number."""
    from optuna.trial import TrialState

    points = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        pruned = t.state == TrialState.PRUNED
        value = t.intermediate_values[t.last_step] if pruned and t.last_step is not None else t.value
        if value is not None and math.isfinite(value):
            points.append(TrialPoint(t.number, float(value), pruned, dict(t.params)))
    return sorted(points, key=lambda p: p.number)


def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _title(study: Any, points: list[TrialPoint], title: str | None = None) -> str:
    """``title`` (a grid's: its configs stand in for trials) or the study's name and trial counts."""
    if title is not None:
        return title
    pruned = sum(p.pruned for p in points)
    return f"study {study.study_name}: {len(points) - pruned} complete, {pruned} pruned trials"


def history_figure(study: Any, objective: str) -> Figure:
    """The objective of every finished trial by trial number, pruned trials marked, and the best so far."""
    points = trial_points(study)
    maximize = study.direction.name == "MAXIMIZE"
    fig, ax = _figure()
    complete = [p for p in points if not p.pruned]
    pruned = [p for p in points if p.pruned]
    ax.scatter([p.number for p in complete], [p.value for p in complete], color="C0", zorder=3,
               label=f"complete ({objective})")
    if pruned:
        ax.scatter([p.number for p in pruned], [p.value for p in pruned], facecolors="none", edgecolors="C3",
                   zorder=3, label=PRUNED_LABEL)
    if complete:
        pick = max if maximize else min
        best, steps = [], []
        for p in complete:
            best.append(p.value if not best else pick(best[-1], p.value))
            steps.append(p.number)
        ax.step(steps, best, where="post", color="C1", label=f"best so far ({short(best[-1])})")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{objective} ({'higher' if maximize else 'lower'} is better)")
    ax.set_title(_title(study, points))
    ax.legend(loc="best")
    return fig


@dataclass(frozen=True)
class Axis:
    """A searched parameter as drawn: each point's position, the labels of the axis (its ends, or every choice of
    a categorical parameter, at positions 0, 1, ...), and whether it is on a log scale."""

    positions: list[float]
    labels: list[str]
    categorical: bool
    log: bool


def _axis(points: list[TrialPoint], key: str, study: Any) -> Axis:
    from optuna.distributions import CategoricalDistribution

    dist = next((t.distributions[key] for t in study.get_trials(deepcopy=False) if key in t.distributions), None)
    raw = [p.params[key] for p in points]
    if isinstance(dist, CategoricalDistribution):
        choices = [str(c) for c in dist.choices]
        return Axis([float(choices.index(str(v))) for v in raw], choices, True, False)
    return Axis([float(v) for v in raw], [short(float(dist.low)), short(float(dist.high))], False, bool(dist.log))


def slice_figure(study: Any, objective: str, title: str | None = None) -> Figure:
    """The objective against the one searched parameter, pruned trials marked."""
    points = trial_points(study)
    [key] = sorted({k for p in points for k in p.params})
    axis = _axis(points, key, study)
    fig, ax = _figure()
    for pruned, style in ((False, {"color": "C0", "label": f"complete ({objective})"}),
                          (True, {"facecolors": "none", "edgecolors": "C3", "label": PRUNED_LABEL})):
        chosen = [(x, p.value) for x, p in zip(axis.positions, points) if p.pruned == pruned]
        if chosen:
            ax.scatter([x for x, _ in chosen], [y for _, y in chosen], zorder=3, **style)
    if axis.categorical:
        ax.set_xticks(range(len(axis.labels)), axis.labels)
    else:
        ax.set_xscale("log" if axis.log else "linear")
        ax.xaxis.set_major_formatter(lambda x, _: short(float(x)))
    ax.set_xlabel(key)
    ax.set_ylabel(objective)
    ax.set_title(_title(study, points, title))
    ax.legend(loc="best")
    return fig


def parallel_figure(study: Any, objective: str, title: str | None = None, order: Sequence[str] = ()) -> Figure:
    """One vertical axis per searched parameter and one for the objective, each scaled to its range; a line per
    trial, coloured by its objective (pruned trials light and dashed), the best drawn last, thick, and named in the
    legend. The axis ends name their values (a categorical axis every choice). The axes follow ``order`` (e.g. the
    most important parameter first), the parameters it leaves out by name."""
    import matplotlib

    points = trial_points(study)
    found = {k for p in points for k in p.params}
    keys = [k for k in order if k in found] + sorted(found - set(order))
    columns, ends, bounds = [], [], []
    for key in keys:
        axis = _axis(points, key, study)
        columns.append([math.log10(v) for v in axis.positions] if axis.log else axis.positions)
        ends.append((axis.labels[0], axis.labels[-1]))
        # a categorical axis spans every choice (the labels' places), a numeric one the values drawn
        bounds.append((0.0, float(len(axis.labels) - 1)) if axis.categorical else (min(columns[-1]), max(columns[-1])))
    columns.append([p.value for p in points])
    ends.append((short(min(p.value for p in points)), short(max(p.value for p in points))))
    bounds.append((min(columns[-1]), max(columns[-1])))
    lows, highs = [lo for lo, _ in bounds], [hi for _, hi in bounds]
    unit = [[(v - lo) / (hi - lo) if hi > lo else 0.5 for v in column] for column, lo, hi in zip(columns, lows, highs)]
    fig, ax = _figure()
    colours = matplotlib.colormaps["viridis_r" if study.direction.name == "MINIMIZE" else "viridis"]
    xs = list(range(len(columns)))
    complete = [i for i, p in enumerate(points) if not p.pruned]
    pick = min if study.direction.name == "MINIMIZE" else max
    best = pick(complete, key=lambda i: points[i].value) if complete else None
    for i, p in enumerate(points):
        ys = [column[i] for column in unit]
        if p.pruned:
            ax.plot(xs, ys, color="0.7", linestyle="--", linewidth=1)
        elif i != best:
            ax.plot(xs, ys, color=colours(unit[-1][i]), linewidth=1.5)
    if best is not None:
        values = ", ".join(f"{k.rsplit('.', 1)[-1]}={short(points[best].params[k])}" for k in keys)
        ax.plot(xs, [column[best] for column in unit], color=colours(unit[-1][best]), linewidth=3.5, zorder=4,
                label=f"best: {values} ({short(points[best].value)})")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False, fontsize=9)
    for x, (key, (low, high)) in enumerate(zip([*keys, objective], ends)):
        axis = _axis(points, key, study) if key in keys else None
        if axis is not None and axis.categorical:  # every choice at its place
            for position, label in enumerate(axis.labels):
                at = position / (len(axis.labels) - 1) if len(axis.labels) > 1 else 0.5
                ax.text(x + 0.03, at, label, ha="left", va="center", fontsize=8, zorder=5,
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
            continue
        ax.text(x, -0.04, low, ha="center", va="top", fontsize=8)
        ax.text(x, 1.04, high, ha="center", va="bottom", fontsize=8)
    for x in xs:
        ax.axvline(x, color="0.5", linewidth=0.8, zorder=1)
    ax.set_xticks(xs, [*keys, objective])
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.12)
    ax.set_title(textwrap.fill(_title(study, points, title) + ("" if title is not None else " (pruned: dashed)"), 110))
    return fig


def plot_study(study: Any, out_dir: str | Path, objective: str) -> list[Path]:
    """Write the study's figures into ``out_dir``; none when no trial completed. Returns the files written."""
    from optuna.trial import TrialState

    out_dir = Path(out_dir)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    params = {key for p in trial_points(study) for key in p.params}
    figures = [(names.OPTIMIZATION_HISTORY, history_figure(study, objective))]
    if len(params) >= 2:
        figures.append((names.PARALLEL_COORDINATES, parallel_figure(study, objective)))
    elif params:
        figures.append((names.SLICE_PLOT, slice_figure(study, objective)))
    return [save_figure(fig, out_dir / filename) for filename, fig in figures]
