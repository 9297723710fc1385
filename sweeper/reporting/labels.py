"""How a value, a metric and a config are named in tables and legends: short numbers, and labels that tell configs
apart (unique by construction)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..config.identity import short_number


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """{key: what a label calls it}: the last dotted part (`optimizer.lr` -> `lr`), the whole key where two keys
    share that part."""
    tails = [k.split(".")[-1] for k in keys]
    return {k: t if tails.count(t) == 1 else k for k, t in zip(keys, tails)}


def numbered_duplicates(labels: Sequence[str]) -> list[str]:
    """`labels`, those that occur more than once suffixed with their position (`x (config 3)`), so all differ."""
    return [f"{label} (config {i + 1})".strip() if labels.count(label) > 1 else label
            for i, label in enumerate(labels)]


def distinct_labels(settings: Sequence[Mapping[str, Any]], fallbacks: Sequence[str] | None = None) -> list[str]:
    """One label per config, `key=value ...` of the settings that tell the configs apart; all labels differ.

    Keys are taken in order of how many values they have across the configs (the most varying first, ties in
    first-seen order), each only if it separates configs that the keys before it left equal, until every config
    has a label of its own. A config with nothing to show gets its `fallbacks` entry (e.g. its run name); labels
    still equal (configs that differ in something not given here) are numbered.
    """
    keys = list(dict.fromkeys(k for s in settings for k in s))
    shown = [{k: short_number(v) for k, v in s.items()} for s in settings]
    spread = {k: len({s.get(k) for s in shown}) for k in keys}
    chosen: list[str] = []

    def distinct(candidate: Sequence[str]) -> int:
        return len({tuple(s.get(k) for k in candidate) for s in shown})

    for key in sorted((k for k in keys if spread[k] > 1), key=lambda k: -spread[k]):
        if distinct(chosen) == len(shown):
            break
        if distinct([*chosen, key]) > distinct(chosen):
            chosen.append(key)
    short = _short_keys(chosen)
    labels = [" ".join(f"{short[k]}={s[k]}" for k in chosen if k in s) for s in shown]
    return numbered_duplicates([label or (fallbacks[i] if fallbacks else "") for i, label in enumerate(labels)])


def format_metric(value: float) -> str:
    """A loss or an accuracy in a table: 4 decimals, so columns line up (`0.9500`, `0.0587`: 3-4 significant digits
    in their usual range)."""
    return f"{value:.4f}" if math.isfinite(value) else str(value)
