"""Runs as table rows: the swept values, the summary metrics, seed groups with mean ± std, csv and markdown.

A row is a `SummaryRow`: what the tables, the end-of-sweep lines, finalize and the report show of one run.
"""
from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sweeper import names

from .history import RunHistory
from .labels import distinct_labels, format_metric, short_number

if TYPE_CHECKING:
    from mlflow.entities import Run

# {summary metric's name in names.py: the SummaryRow field and table column that shows it}; the fields of
# NUM_PARAMETERS, EPOCHS and STOP_REASON carry the name itself
METRIC_FIELDS = {
    names.NUM_PARAMETERS: names.NUM_PARAMETERS,
    names.BEST_VAL_ACCURACY: "best_val_accuracy",
    names.BEST_VAL_LOSS: "best_val_loss",
    names.FINAL_VAL_ACCURACY: "final_val_accuracy",
    names.FINAL_VAL_LOSS: "final_val_loss",
    names.EPOCHS: names.EPOCHS,
    names.TRAIN_SECONDS: "seconds",
}
# the summary metrics a killed run's curves can stand in for
_CURVE_FIELDS = (names.BEST_VAL_ACCURACY, names.BEST_VAL_LOSS, names.FINAL_VAL_ACCURACY, names.FINAL_VAL_LOSS)
# the columns after the swept values, in the csv and markdown tables
SUMMARY_FIELDS = (*(METRIC_FIELDS[n] for n in (names.NUM_PARAMETERS, *_CURVE_FIELDS, names.EPOCHS)),
                  names.STOP_REASON, METRIC_FIELDS[names.TRAIN_SECONDS], "status")
# the columns the seed table shows as mean ± std
SEED_STATS = tuple(METRIC_FIELDS[n] for n in (*_CURVE_FIELDS, names.EPOCHS, names.TRAIN_SECONDS))
# columns whose values are counts: shown as integers
INTEGER_COLUMNS = frozenset({names.NUM_PARAMETERS, names.EPOCHS})
# labels that mean "no preset chosen": the config default and a null name
_NO_PRESET = frozenset({"default", "None", "null"})


# ----------------------------------------------------------------------------------------------- run interpretation

def split_overrides(text: str) -> list[str]:
    """Split on whitespace outside brackets and quotes (`model.hidden_sizes=[64, 64]`, `name='a b'` stay whole)."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        elif depth == 0 and ch.isspace():
            if current:
                parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if current:
        parts.append("".join(current))
    return parts


def parse_overrides(text: str | None) -> dict[str, str]:
    """The `names.OVERRIDES` tag (the job's Hydra overrides joined by single spaces) as {key: value}, in order.

    `+key=v` / `++key=v` lose their prefix; `~key` (a deletion) is dropped.
    """
    out: dict[str, str] = {}
    for item in split_overrides(text or ""):
        if "=" not in item or item.startswith("~"):
            continue
        key, value = item.split("=", 1)
        out[key.lstrip("+")] = value
    return out


def preset_name(run: Run) -> str | None:
    """The experiment preset of a run (tag `names.EXPERIMENT`), None for the config default."""
    value = run.data.tags.get(names.EXPERIMENT)
    return value if value and value not in _NO_PRESET else None


def run_name(run: Run) -> str:
    return run.info.run_name or run.data.tags.get(names.RUN_NAME) or run.info.run_id[:8]


def config_group_key(run: Run) -> str:
    """Runs with equal keys differ only in their seed: tag `names.CONFIG_HASH_NOSEED`, else the params minus the
    seed and the results."""
    tagged = run.data.tags.get(names.CONFIG_HASH_NOSEED)
    if tagged:
        return tagged
    params = {k: v for k, v in run.data.params.items() if k not in (names.SEED_PARAM, names.NUM_PARAMETERS)}
    if not params:
        return "run:" + run.info.run_id  # nothing to compare: a group of its own
    return "params:" + json.dumps(params, sort_keys=True)


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value differs between runs (all override keys of a single run), in first-seen order."""
    overrides = [parse_overrides(r.data.tags.get(names.OVERRIDES)) for r in runs]
    order: list[str] = []
    for o in overrides:
        order.extend(k for k in o if k not in order)
    if len(runs) <= 1:
        return order
    return [k for k in order if len({o.get(k) for o in overrides}) > 1]


def job_number(run: Run) -> int | None:
    """The run's place in its sweep's grid: Hydra's job number, the last part of its output directory (the project's
    `hydra.sweep.subdir` is `${hydra.job.num}`); None for a single run or another subdir pattern."""
    name = Path(run.data.tags.get(names.OUTPUT_DIR, "")).name
    return int(name) if name.isdigit() else None


def _metric(run: Run, key: str) -> float | None:
    value = run.data.metrics.get(key)
    return float(value) if value is not None else None


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _num_parameters(run: Run) -> int | None:
    value = _metric(run, names.NUM_PARAMETERS)
    if value is None and run.data.params.get(names.NUM_PARAMETERS):  # a run that died before its summary metrics
        try:
            value = float(run.data.params[names.NUM_PARAMETERS])
        except ValueError:
            return None
    return int(value) if value is not None else None


@dataclass
class SummaryRow:
    """One run as the tables, the end-of-sweep lines, finalize and the report show it (`summary_row` reads it).

    swept: {swept override key: the run's value; where it did not set it (a run reused from another sweep), the
    value it logged as a param; "" when it has none either}. The summary values are the run's
    metrics of METRIC_FIELDS, the tag `names.STOP_REASON` and the run's status. group: runs whose configurations
    differ only in the seed share it. job: Hydra's job number (the grid's order), started: start time in ms.
    """

    run_name: str
    run_id: str
    status: str
    group: str
    swept: dict[str, str] = field(default_factory=dict)
    num_parameters: int | None = None
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    final_val_accuracy: float | None = None
    final_val_loss: float | None = None
    epochs: int | None = None
    stop_reason: str = ""
    seconds: float | None = None
    seed: str | None = None
    job: int | None = None
    started: int = 0

    def column(self, name: str) -> Any:
        """The value of table column `name`: a swept key, else a field (`run_name`, SUMMARY_FIELDS, `run_id`, ...)."""
        return self.swept[name] if name in self.swept else getattr(self, name)


def _curve_fallbacks(history: RunHistory) -> dict[str, float]:
    """{metric name: value} of the summary metrics as the curves give them (a killed run has no summary metrics)."""
    if not history.val_steps.size:
        return {}
    vl, va = history.val_loss, history.val_accuracy
    out = {names.FINAL_VAL_LOSS: float(vl[-1]), names.FINAL_VAL_ACCURACY: float(va[-1])}
    if np.isfinite(vl).any():
        out[names.BEST_VAL_LOSS] = float(np.min(vl[np.isfinite(vl)]))
    if np.isfinite(va).any():
        out[names.BEST_VAL_ACCURACY] = float(np.max(va[np.isfinite(va)]))
    return out


def summary_row(run: Run, keys: Sequence[str], history: RunHistory | None = None) -> SummaryRow:
    """One table row; summary metrics come from the run, and fall back to its curves (a killed run has curves but
    no summary metrics)."""
    overrides = parse_overrides(run.data.tags.get(names.OVERRIDES))
    fallbacks = _curve_fallbacks(history) if history is not None else {}
    curve_values = {}
    for name in _CURVE_FIELDS:
        value = _metric(run, name)
        curve_values[METRIC_FIELDS[name]] = value if value is not None else fallbacks.get(name)
    epochs = _metric(run, names.EPOCHS)
    seconds = _metric(run, names.TRAIN_SECONDS)
    if seconds is None and run.info.end_time and run.info.start_time:
        seconds = (run.info.end_time - run.info.start_time) / 1000.0
    return SummaryRow(
        run_name=run_name(run), run_id=run.info.run_id, status=run.info.status, group=config_group_key(run),
        swept={k: overrides.get(k) or run.data.params.get(k, "") for k in keys}, num_parameters=_num_parameters(run), **curve_values,
        epochs=int(epochs) if epochs is not None else None, stop_reason=run.data.tags.get(names.STOP_REASON, ""),
        seconds=seconds, seed=run.data.params.get(names.SEED_PARAM), job=job_number(run),
        started=run.info.start_time or 0)


def summary_rows(runs: Sequence[Run], histories: dict[str, RunHistory] | None = None) -> tuple[list[str],
                                                                                              list[SummaryRow]]:
    """(swept keys, one row per run)."""
    keys = swept_keys(runs)
    histories = histories or {}
    return keys, [summary_row(r, keys, histories.get(r.info.run_id)) for r in runs]


def best_row(rows: Sequence[SummaryRow]) -> SummaryRow | None:
    """The FINISHED row with the lowest finite best validation loss (None if there is none)."""
    candidates = [r for r in rows if r.status == "FINISHED" and _finite_or_none(r.best_val_loss) is not None]
    return min(candidates, key=lambda r: r.best_val_loss) if candidates else None


def without_seed(name: str) -> str:
    """A run name without its `seed=<n>` part (`task3c seed=0` -> `task3c`): the label of the config its seeds share."""
    seed = names.SEED_PARAM.split(".")[-1] + "="
    return " ".join(p for p in split_overrides(name) if not p.startswith(seed)) or name


@dataclass
class Group:
    """Runs sharing a configuration except the seed."""

    key: str
    label: str
    rows: list[SummaryRow] = field(default_factory=list)

    @property
    def per_seed(self) -> list[SummaryRow]:
        """One row per seed (`one_per_seed`): what a mean over seeds averages."""
        return one_per_seed(self.rows)


def one_per_seed(rows: Sequence[SummaryRow]) -> list[SummaryRow]:
    """One row per distinct seed, in first-seen order: a rerun of a seed counts once (its FINISHED run, the latest
    started if several). A row without a seed counts as a seed of its own."""
    chosen: dict[Any, SummaryRow] = {}
    for row in rows:
        seed = row.seed if row.seed is not None else ("run", row.run_id)
        kept = chosen.get(seed)
        if kept is None or (row.status == "FINISHED", row.started) > (kept.status == "FINISHED", kept.started):
            chosen[seed] = row
    order = {id(r): i for i, r in enumerate(rows)}
    return sorted(chosen.values(), key=lambda r: order[id(r)])


def group_rows(rows: Sequence[SummaryRow], keys: Sequence[str]) -> list[Group]:
    """Group rows by their config key (seed excluded), in first-seen order, labelled by the swept values that tell
    the groups apart (`distinct_labels`), else the run name without its seed."""
    groups: dict[str, Group] = {}
    for row in rows:
        groups.setdefault(row.group, Group(row.group, "")).rows.append(row)
    settings = [{k: g.rows[0].swept[k] for k in keys if k != names.SEED_PARAM and g.rows[0].swept.get(k, "") != ""}
                for g in groups.values()]
    fallbacks = [short_number(without_seed(g.rows[0].run_name)) for g in groups.values()]
    for g, label in zip(groups.values(), distinct_labels(settings, fallbacks)):
        g.label = label
    return list(groups.values())


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    """(mean, sample std (ddof=1, 0 for one value), n) over the finite values; (None, None, 0) if there are none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None, None, 0
    arr = np.asarray(finite)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0, arr.size


# ---------------------------------------------------------------------------------------------------------- writing

def _fmt(value: Any, key: str = "") -> str:
    """A table cell: metrics with 4 decimals, seconds with 1, long decimals in swept values with 4 significant digits;
    a run name stays whole (it is what the MLflow UI finds the run by)."""
    if value is None:
        return ""
    if isinstance(value, float):
        if key == "seconds" and math.isfinite(value):
            return f"{value:.1f}"
        return format_metric(value)
    return str(value) if key == "run_name" else short_number(value)


def write_summary_csv(rows: Sequence[SummaryRow], keys: Sequence[str], path: str | Path) -> Path:
    """summary.csv: full precision numbers, empty cells for missing values."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["run_name", *keys, *SUMMARY_FIELDS, "run_id", "group"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if row.column(c) is None else row.column(c)) for c in columns})
    return path


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def summary_markdown(rows: Sequence[SummaryRow], keys: Sequence[str], groups: Sequence[Group] | None = None,
                     title: str | None = None, best: SummaryRow | None = None, level: int = 1) -> str:
    """The per-run table; when some config ran with several seeds, a mean ± std table over seeds as well, which ends
    with the 95 % t-interval of the mean best validation loss (the sweep's objective). `title` is a heading of `level`
    (its subsection one deeper)."""
    columns = ["run_name", *keys, *SUMMARY_FIELDS]
    text = f"{'#' * level} {title}\n\n" if title else ""
    if best is not None:
        text += (f"Best run (lowest best validation loss among FINISHED runs): **{best.run_name}** "
                 f"(best val loss {_fmt(best.best_val_loss)}, best val accuracy {_fmt(best.best_val_accuracy)}).\n\n")
    text += markdown_table(columns, [[_fmt(r.column(c), c) for c in columns] for r in rows])
    if groups and any(len(g.per_seed) > 1 for g in groups):
        body = [[g.label, str(len(g.per_seed)),
                 *(_stat_cell([getattr(r, stat) for r in g.per_seed], stat) for stat in SEED_STATS),
                 _interval_cell([r.best_val_loss for r in g.per_seed])] for g in groups]
        header = ["config", "seeds", *SEED_STATS, "best_val_loss 95 % CI"]
        text += f"\n{'#' * (level + 1)} Mean ± std over seeds\n\n" + markdown_table(header, body)
    return text


def _interval_cell(values: Sequence[Any]) -> str:
    """The 95 % t-interval of the mean of `values` (finite ones), or "-" below 2 of them."""
    from .stats import mean_interval

    found = mean_interval(values)
    return "-" if found.low is None else f"{_fmt(found.low, 'best_val_loss')} to {_fmt(found.high, 'best_val_loss')}"


def _stat_cell(values: Sequence[Any], key: str) -> str:
    """`mean ± std` over a group's runs; a single run's value as it is (no "± 0"); integer columns as integers."""
    mean, std, n = mean_std(values)
    if mean is None:
        return ""
    if n == 1:
        value = next(float(v) for v in values if v is not None and math.isfinite(float(v)))
        cell = str(int(value)) if key in INTEGER_COLUMNS else _fmt(value, key)
    elif key in INTEGER_COLUMNS:
        cell = f"{mean:.1f} ± {std:.1f}"
    else:
        cell = f"{_fmt(float(mean), key)} ± {_fmt(float(std), key)}"
    return cell + ("" if n == len(values) else f" (n={n})")


_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_filename(text: str, max_len: int = 80) -> str:
    return _UNSAFE.sub("_", text).strip("_")[:max_len] or "run"
