"""Runs as table rows: the swept values, the summary metrics, seed groups with mean ± std, csv and markdown.

A row is a dict with the keys `run_name`, each swept override key, SUMMARY_FIELDS, `run_id`, `group` (runs whose
configurations differ only in the seed share a group), `seed`, `job` (the Hydra job number) and `started`.
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

# columns named like a metric or tag show that metric or tag
SUMMARY_FIELDS = (
    names.NUM_PARAMETERS,
    "best_val_accuracy",
    "best_val_loss",
    "final_val_accuracy",
    "final_val_loss",
    names.EPOCHS,
    names.STOP_REASON,
    "seconds",
    "status",
)
# the columns the seed table shows as mean ± std
SEED_STATS = ("best_val_accuracy", "best_val_loss", "final_val_accuracy", "final_val_loss", names.EPOCHS, "seconds")
# columns whose values are counts: shown as integers
INTEGER_COLUMNS = frozenset({names.NUM_PARAMETERS, names.EPOCHS})
# labels that mean "no preset chosen": the config default and a null name
_NO_PRESET = frozenset({"default", "None", "null"})


# ----------------------------------------------------------------------------------------------- run interpretation

def _split_overrides(text: str) -> list[str]:
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
    for item in _split_overrides(text or ""):
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


def summary_row(run: Run, keys: Sequence[str], history: RunHistory | None = None) -> dict[str, Any]:
    """One table row; summary metrics come from the run, and fall back to its curves (a killed run has curves but
    no summary metrics)."""
    overrides = parse_overrides(run.data.tags.get(names.OVERRIDES))
    row: dict[str, Any] = {"run_name": run_name(run)}
    for k in keys:
        row[k] = overrides.get(k, "")
    row[names.NUM_PARAMETERS] = _num_parameters(run)
    row["best_val_accuracy"] = _metric(run, names.BEST_VAL_ACCURACY)
    row["best_val_loss"] = _metric(run, names.BEST_VAL_LOSS)
    row["final_val_accuracy"] = _metric(run, names.FINAL_VAL_ACCURACY)
    row["final_val_loss"] = _metric(run, names.FINAL_VAL_LOSS)
    if history is not None and history.val_steps.size:
        vl, va = history.val_loss, history.val_accuracy
        if row["best_val_loss"] is None and np.isfinite(vl).any():
            row["best_val_loss"] = float(np.min(vl[np.isfinite(vl)]))
        if row["best_val_accuracy"] is None and np.isfinite(va).any():
            row["best_val_accuracy"] = float(np.max(va[np.isfinite(va)]))
        if row["final_val_loss"] is None:
            row["final_val_loss"] = float(vl[-1])
        if row["final_val_accuracy"] is None:
            row["final_val_accuracy"] = float(va[-1])
    epochs = _metric(run, names.EPOCHS)
    row[names.EPOCHS] = int(epochs) if epochs is not None else None
    row[names.STOP_REASON] = run.data.tags.get(names.STOP_REASON, "")
    seconds = _metric(run, names.TRAIN_SECONDS)
    if seconds is None and run.info.end_time and run.info.start_time:
        seconds = (run.info.end_time - run.info.start_time) / 1000.0
    row["seconds"] = seconds
    row["status"] = run.info.status
    row["run_id"] = run.info.run_id
    row["group"] = config_group_key(run)
    row["seed"] = run.data.params.get(names.SEED_PARAM)
    row["job"] = job_number(run)
    row["started"] = run.info.start_time or 0
    return row


def summary_rows(runs: Sequence[Run], histories: dict[str, RunHistory] | None = None) -> tuple[list[str],
                                                                                              list[dict[str, Any]]]:
    """(swept keys, one row per run)."""
    keys = swept_keys(runs)
    histories = histories or {}
    return keys, [summary_row(r, keys, histories.get(r.info.run_id)) for r in runs]


def best_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The FINISHED row with the lowest finite best_val_loss (None if there is none)."""
    candidates = [r for r in rows if r["status"] == "FINISHED" and _finite_or_none(r["best_val_loss"]) is not None]
    return min(candidates, key=lambda r: r["best_val_loss"]) if candidates else None


def without_seed(name: str) -> str:
    """A run name without its `seed=<n>` part (`task3c seed=0` -> `task3c`): the label of the config its seeds share."""
    seed = names.SEED_PARAM.split(".")[-1] + "="
    return " ".join(p for p in _split_overrides(name) if not p.startswith(seed)) or name


@dataclass
class Group:
    """Runs sharing a configuration except the seed."""

    key: str
    label: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def per_seed(self) -> list[dict[str, Any]]:
        """One row per seed (`one_per_seed`): what a mean over seeds averages."""
        return one_per_seed(self.rows)


def one_per_seed(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per distinct seed, in first-seen order: a rerun of a seed counts once (its FINISHED run, the latest
    started if several). A row without a seed counts as a seed of its own."""
    chosen: dict[Any, dict[str, Any]] = {}
    for row in rows:
        seed = row["seed"] if row.get("seed") is not None else ("run", row["run_id"])
        kept = chosen.get(seed)
        if kept is None or (row["status"] == "FINISHED", row["started"]) > (kept["status"] == "FINISHED",
                                                                              kept["started"]):
            chosen[seed] = row
    order = {id(r): i for i, r in enumerate(rows)}
    return sorted(chosen.values(), key=lambda r: order[id(r)])


def group_rows(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[Group]:
    """Group rows by their config key (seed excluded), in first-seen order, labelled by the swept values that tell
    the groups apart (`distinct_labels`), else the run name without its seed."""
    groups: dict[str, Group] = {}
    for row in rows:
        groups.setdefault(row["group"], Group(row["group"], "")).rows.append(row)
    settings = [{k: g.rows[0][k] for k in keys if k != names.SEED_PARAM and g.rows[0].get(k, "") != ""}
                for g in groups.values()]
    fallbacks = [short_number(without_seed(g.rows[0]["run_name"])) for g in groups.values()]
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
    if value is None:
        return ""
    if isinstance(value, float):
        if key == "seconds" and math.isfinite(value):
            return f"{value:.1f}"
        return format_metric(value)
    return short_number(value)


def write_summary_csv(rows: Sequence[dict[str, Any]], keys: Sequence[str], path: str | Path) -> Path:
    """summary.csv: full precision numbers, empty cells for missing values."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["run_name", *keys, *SUMMARY_FIELDS, "run_id", "group"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return path


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def summary_markdown(rows: Sequence[dict[str, Any]], keys: Sequence[str], groups: Sequence[Group] | None = None,
                     title: str | None = None, best: dict[str, Any] | None = None, level: int = 1) -> str:
    """The per-run table; when some config ran with several seeds, a mean ± std table over seeds as well. `title`
    is a heading of `level` (its subsection one deeper)."""
    columns = ["run_name", *keys, *SUMMARY_FIELDS]
    text = f"{'#' * level} {title}\n\n" if title else ""
    if best is not None:
        text += (f"Best run (lowest best validation loss among FINISHED runs): **{short_number(best['run_name'])}** "
                 f"(best val loss {_fmt(best['best_val_loss'])}, best val accuracy "
                 f"{_fmt(best['best_val_accuracy'])}).\n\n")
    text += markdown_table(columns, [[_fmt(r.get(c), c) for c in columns] for r in rows])
    if groups and any(len(g.per_seed) > 1 for g in groups):
        body = [[g.label, str(len(g.per_seed)), *(_stat_cell([r[s] for r in g.per_seed], s) for s in SEED_STATS)]
                for g in groups]
        text += f"\n{'#' * (level + 1)} Mean ± std over seeds\n\n" + markdown_table(["config", "seeds", *SEED_STATS],
                                                                                      body)
    return text


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
