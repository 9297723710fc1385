"""The end-of-sweep summary as plain text lines, for the launching process to print on stdout (and so for Slurm's and
joblib's output): one row per child, the best child and where the sweep's files are.

`summary_lines` returns the lines; the caller prints them and may append its own (e.g. a link to the UI view).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sweeper import names

from .labels import format_metric, short_number
from .tables import METRIC_FIELDS

if TYPE_CHECKING:
    from .finalize import SweepSummary

# (header, SummaryRow column, format) of the columns after the swept values
_COLUMNS = (
    ("params", METRIC_FIELDS[names.NUM_PARAMETERS], "int"),
    ("best val acc", METRIC_FIELDS[names.BEST_VAL_ACCURACY], "metric"),
    ("best val loss", METRIC_FIELDS[names.BEST_VAL_LOSS], "metric"),
    ("stop reason", names.STOP_REASON, "str"),
    ("seconds", METRIC_FIELDS[names.TRAIN_SECONDS], "seconds"),
    ("status", "status", "str"),
)


def _cell(value: Any, fmt: str) -> str:
    if value is None or value == "":
        return "-"
    if fmt == "int":
        return f"{int(value):,}"
    if fmt == "str":
        return short_number(value)
    if fmt == "metric":
        return format_metric(float(value))
    # seconds: a digits run trains in hundredths of a second, an MNIST run in tens of seconds
    value = float(value)
    return f"{value:{'.2f' if value < 10 else '.1f'}}" if math.isfinite(value) else str(value)


def text_table(header: Sequence[str], body: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Columns padded to their widest cell; numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]


def results_table(summary: SweepSummary) -> list[str]:
    """One line per child: the swept values (the run name when nothing was swept), then `_COLUMNS`."""
    keys = list(summary.keys) or ["run_name"]
    header = [k.split(".")[-1] if k != "run_name" else "run" for k in keys] + [h for h, _, _ in _COLUMNS]
    body = []
    for row in summary.rows:
        cells = [(str(row.column(k)) if k == "run_name" else short_number(row.column(k))) or "-" for k in keys]
        for _, key, fmt in _COLUMNS:
            value = row.column(key)
            if key == "status" and row.run_id in summary.reused:
                value = "reused"
            cells.append(_cell(value, fmt))
        body.append(cells)
    right = [False] * len(keys) + [fmt != "str" for _, _, fmt in _COLUMNS]
    return text_table(header, body, right)


def summary_lines(summary: SweepSummary, title: str, extra_lines: Sequence[str] = ()) -> list[str]:
    """The sweep's results as log lines: a heading, the table, the best child, the files, then `extra_lines`."""
    rows = summary.rows
    failed = sum(r.status != "FINISHED" for r in rows)
    lines = [f"{title}: {len(rows)} runs ({len(summary.reused)} reused, {failed} not FINISHED)"]
    if rows:
        lines += results_table(summary)
    best = summary.best
    if best is None:
        lines.append("best: none (no FINISHED run with a finite validation loss)")
    else:
        lines.append(f"best: {best.run_name} (best val loss {_cell(best.best_val_loss, 'metric')}, "
                     f"best val acc {_cell(best.best_val_accuracy, 'metric')}, run {best.run_id})")
    if summary.verdict is not None and len(summary.groups) > 1:
        lines.append(f"verdict: {summary.verdict.sentence}")
    if summary.confirmation is not None:
        lines.append(f"confirm: {summary.confirmation['sentence']}")
    if summary.importance is not None:
        found = summary.importance
        ranked = ", ".join(f"{k.split('.')[-1]} {found.fanova[k]:.2f}" for k in found.params if k in found.fanova)
        lines.append(f"importance (fANOVA, {found.n_configs} configs): {ranked}"
                     + (f" ({found.notes[0]})" if found.notes else ""))
    for name in ("comparison.png", "importance.png", names.PARALLEL_COORDINATES, names.SLICE_PLOT, "summary.md"):
        if name in summary.files:
            lines.append(f"{name}: {summary.files[name]}")
    return [*lines, *extra_lines]
