"""Which setting matters? The importance of each swept parameter for the sweep's objective, by Optuna's evaluators.

One completed trial per config (`tables.Group`): its params are the config's swept values (the seed is not a
parameter: seeds are averaged, so that seed noise does not count as anybody's importance), its value the config's mean
objective over its distinct seeds, as the sweep's verdict computed it (`verdict.judge`). The trials go into an in-memory study
(`optuna.trial.create_trial` + `add_trials`), and `optuna.importance` computes fANOVA (a random forest's functional
ANOVA, seed 0: reproducible) and, from `PED_MIN_CONFIGS` configs on, PED-ANOVA (how the top 10 % of configs differ
from all; with fewer its top quantile holds one config). Beside them, each numeric parameter's Spearman rank
correlation with the objective (its sign says which way it helps); a categorical one has none.

Distributions: integers and floats that span a factor of 10 or more (and are positive) are log-scaled, as a
learning-rate or width grid is; anything else that is not a number (an activation, a list of sizes) is categorical.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .labels import format_metric
from .stats import spearman as rank_correlation
from .tables import Group, markdown_table
from .verdict import Objective, SeedVerdict

MIN_CONFIGS = 8  # fewer configs: the numbers rest on too few points to mean much (said in the note)
PED_MIN_CONFIGS = 20


@dataclass
class Importance:
    """Per swept parameter (most important first): fANOVA, PED-ANOVA (or None) and Spearman's rho (or None)."""

    params: list[str]
    fanova: dict[str, float]
    ped_anova: dict[str, float] | None
    spearman: dict[str, float | None]
    n_configs: int
    notes: list[str] = field(default_factory=list)
    study: Any = None  # the in-memory Optuna study of the configs (one trial each), which the figures draw


def _value(text: Any) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            pass
    return str(text)


def _distribution(values: list[Any]) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if all(isinstance(v, int) for v in values):
        low, high = min(values), max(values)
        return IntDistribution(low, high, log=low >= 1 and high >= 10 * low)
    if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        low, high = float(min(values)), float(max(values))
        return FloatDistribution(low, high, log=low > 0 and high >= 10 * low)
    return CategoricalDistribution(sorted({str(v) for v in values}))


def importance(groups: Sequence[Group], keys: Sequence[str], judged: SeedVerdict,
               seed_key: str = "") -> Importance | None:
    """The importances of the swept `keys` (but `seed_key`) over `groups`, each at its mean over seeds from `judged`
    (the sweep's verdict on these groups); None when fewer than 2 configs have a finite objective or no key varies
    among them."""
    objective = judged.objective
    means = {g.key: est.mean for g, est in judged.ranked if est.mean is not None}
    scored = [({k: _value(g.rows[0].swept.get(k, "")) for k in keys if k != seed_key}, means[g.key])
              for g in groups if g.key in means]
    if len(scored) < 2:
        return None
    varying = [k for k in keys if k != seed_key and len({repr(p[k]) for p, _ in scored}) > 1]
    if not varying:
        return None
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

    distributions = {k: _distribution([p[k] for p, _ in scored]) for k in varying}
    trials = [optuna.trial.create_trial(
        params={k: (str(p[k]) if isinstance(distributions[k], CategoricalDistribution) else p[k]) for k in varying},
        distributions=distributions, value=value) for p, value in scored]
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    failed = None
    fanova: dict[str, float] = {}
    ped = None
    study = optuna.create_study(study_name="configs", direction="maximize" if objective.maximize else "minimize")
    study.add_trials(trials)
    try:
        fanova = {k: float(v) for k, v in get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=0)).items()}
        if len(scored) >= PED_MIN_CONFIGS:
            ped = {k: float(v) for k, v in get_param_importances(
                study, evaluator=PedAnovaImportanceEvaluator()).items()}
    except (RuntimeError, ValueError) as exc:  # e.g. every config has the same objective: nothing to attribute
        failed = f"the importances could not be computed: {exc}"
    finally:
        optuna.logging.set_verbosity(previous)
    spearman: dict[str, float | None] = {}
    for k in varying:
        if isinstance(distributions[k], CategoricalDistribution) or len({v for _, v in scored}) == 1:
            spearman[k] = None  # no ranks (categorical), or an objective without any (every config the same)
            continue
        spearman[k] = rank_correlation([p[k] for p, _ in scored], [v for _, v in scored])
    result = Importance(sorted(varying, key=lambda k: -fanova.get(k, 0.0)), fanova, ped, spearman, len(scored),
                        study=study)
    if failed:
        result.notes.append(failed)
    if len(scored) < MIN_CONFIGS:
        result.notes.append(f"only {len(scored)} configs (fewer than {MIN_CONFIGS}): the importances rest on too few "
                            "points to mean much")
    if len(varying) == 1:
        result.notes.append("one swept parameter: its importance is 1 by definition")
    return result


def importance_markdown(result: Importance, objective: Objective, level: int | None = 2) -> str:
    """The importances as a markdown table under a heading of `level` (None: a bold line, for a report's sections)."""
    body = [[k, format_metric(result.fanova[k]) if k in result.fanova else "-",
             format_metric(result.ped_anova[k]) if result.ped_anova and k in result.ped_anova else "-",
             format_metric(result.spearman[k]) if result.spearman.get(k) is not None else "-"] for k in result.params]
    direction = "higher" if objective.maximize else "lower"
    question = "Which setting matters?"
    text = ((f"{'#' * level} {question}" if level else f"**{question}**") + "\n\n"
            f"Importance of each swept parameter for `{objective.metric}` ({direction} is better) over "
            f"{result.n_configs} configs (their mean over seeds): Optuna's fANOVA (seed 0) and PED-ANOVA (from "
            f"{PED_MIN_CONFIGS} configs), and Spearman's rank correlation with the objective (numeric parameters).\n\n"
            + markdown_table(["parameter", "fANOVA", "PED-ANOVA", "Spearman rho"], body))
    return text + "".join(f"\nNote: {note}.\n" for note in result.notes)


def plot_importance(result: Importance, path: str | Path, title: str | None = None) -> Path:
    """importance.png: the fANOVA importances as horizontal bars, the most important on top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .plots import DPI, save_figure

    params = list(reversed(result.params))
    fig = Figure(figsize=(7.0, 1.2 + 0.45 * len(params)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    values = [result.fanova.get(k, 0.0) for k in params]
    ax.barh([k.split(".")[-1] for k in params], values, color="C0")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.2f}", va="center", fontsize=9)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("fANOVA importance (sums to 1)")
    heading = textwrap.fill("which setting matters" + (f": {title}" if title else ""), 90)
    if result.notes:
        heading += "\n" + textwrap.fill(f"({result.notes[0]})", 90)
    ax.set_title(heading, fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    return save_figure(fig, path)
