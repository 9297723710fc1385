"""What identifies a run: the hashed view of its config, ``config_hash``/``config_hash_noseed``, and its name.

Two jobs that train the same thing get the same ``config_hash``, whatever the labels, the tracking settings or the
launcher: that is what a relaunch uses to skip configs that already FINISHED, and what reports group seeds by
(``config_hash_noseed``). The model is hashed by its effective hidden sizes (``hidden_sizes=[64]`` == width 64 ×
depth 1), and the effective BLAS thread count replaces ``trainer.blas_threads``: the thread count changes the summation
order in the matmuls, so 1 and 2 threads give different loss histories from the same config and seed.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Iterable, Mapping, Sequence

from .. import names

# Keys that describe where/how a run is recorded or launched, or label it, not what is trained.
HASH_EXCLUDED_KEYS = ("tracking", "hydra", "launcher", "name", "sweep_name")
# Overrides that select what the run name already says (the experiment's own name) or say nothing about the model.
RUN_NAME_SKIPPED_PREFIXES = ("experiment=", "+experiment=", "sweep=", "+sweep=", "hydra.", "hydra/", "tracking.")
# the override key of a course preset, which a run name shows as the experiment's name
PRESET_KEY = "experiment"
# Releases up to 0.1.0 also hashed the label optimizer.name ("sgd" or "momentum"), which did not change the training.
LEGACY_OPTIMIZER_LABELS = ("sgd", "momentum")


def effective_hidden_sizes(model: Mapping[str, Any]) -> tuple[int, ...]:
    """An explicit ``hidden_sizes`` wins; otherwise ``depth`` layers of ``width`` units (a dict or a DictConfig)."""
    if model.get("hidden_sizes") is not None:
        return tuple(int(h) for h in model["hidden_sizes"])
    return (int(model["width"]),) * int(model["depth"])


def hash_view(container: Mapping[str, Any], threads: int, drop_seed: bool = False, engine: str | None = None) -> dict:
    """The resolved config as hashed: effective hidden sizes, the effective BLAS thread count, no excluded keys.

    ``drop_seed`` gives the view that groups the seeds of one configuration (mean/std bands of a seed sweep).
    ``engine`` ("population" for a member of a fused population) is hashed too, since its bits differ from a solo
    run's; a solo run has no engine key, so its hash is what it always was.
    """
    view = {k: v for k, v in container.items() if k not in HASH_EXCLUDED_KEYS}
    if engine is not None:
        view[names.ENGINE] = engine
    trainer = dict(view["trainer"])
    if drop_seed:
        trainer.pop("seed", None)
    trainer["blas_threads"] = int(threads)
    view["trainer"] = trainer
    model = {k: v for k, v in view["model"].items() if k not in ("width", "depth")}
    model["hidden_sizes"] = list(effective_hidden_sizes(container["model"]))
    view["model"] = model
    return view


def config_hash(view: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a ``hash_view``."""
    return hashlib.sha256(json.dumps(view, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def run_hashes(container: Mapping[str, Any], threads: int, engine: str | None = None) -> tuple[str, str]:
    """(config_hash, config_hash_noseed) of a resolved config run with ``threads`` BLAS threads (by ``engine``)."""
    return (config_hash(hash_view(container, threads, engine=engine)),
            config_hash(hash_view(container, threads, drop_seed=True, engine=engine)))


def legacy_hashes(container: Mapping[str, Any], threads: int) -> list[str]:
    """The config_hash values releases up to 0.1.0 gave this config (one per optimizer label it may have carried), so
    that runs they logged are still found by a relaunch."""
    view = hash_view(container, threads)
    return [config_hash({**view, "optimizer": {**view["optimizer"], "name": label}})
            for label in LEGACY_OPTIMIZER_LABELS]


# a decimal number with more than 4 digits after the point, alone or inside a text such as a run name
_LONG_DECIMAL = re.compile(r"(?<![\w.])[+-]?\d*\.\d{5,}(?:[eE][+-]?\d+)?(?![\w.])")


def short_number(value: Any) -> str:
    """A value as a table or legend shows it: a float, or a long decimal in a text, with 4 significant digits
    (`0.05873669160363899` -> `0.05874`, `task3c lr=0.05873669160363899` -> `task3c lr=0.05874`); integers, short
    decimals (`0.02`) and other text as they are."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return _LONG_DECIMAL.sub(lambda m: f"{float(m.group()):.4g}", str(value))


def swept_keys(jobs: Iterable[Sequence[str]]) -> list[str]:
    """The keys a sweep varies, in its overrides' order: those whose value differs between the jobs' override lists
    (``[["model.width=16", "trainer.seed=0"], ["model.width=32", "trainer.seed=0"]]`` -> ``["model.width"]``)."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for override in job:
            key, _, value = override.lstrip("+~").partition("=")
            values.setdefault(key, set()).add(value)
    return [key for key, seen in values.items() if len(seen) > 1 and not key.startswith("hydra")]


def run_name(label: str, overrides: Iterable[str], swept: Sequence[str] = ()) -> str:
    """``task3c hidden_sizes=[128]``: the experiment's name plus the job's other overrides, keys without group.

    In a sweep, ``swept`` (its ``swept_keys``) lead, in the sweep's order, the seed last, floats with 4 significant
    digits, then the experiment's name and the rest: ``width=128 depth=2 seed=0 task3c data=digits``. The MLflow UI
    cuts long names, and what tells a sweep's runs apart must be what stays visible. A swept preset leads as its name.
    """
    parts: list[tuple[str, str]] = [(PRESET_KEY, str(label))]
    for override in overrides:
        if override.startswith(RUN_NAME_SKIPPED_PREFIXES):
            continue
        key, sep, value = override.lstrip("+~").partition("=")
        shown = short_number(value) if key in swept else value
        parts.append((key, f"{key.rsplit('.', 1)[-1]}{sep}{shown}"))

    def rank(key: str) -> tuple[int, int]:
        if key not in swept:
            return (2, 0)
        return (1, 0) if key == names.SEED_PARAM else (0, list(swept).index(key))

    return " ".join(text for _, text in sorted(parts, key=lambda part: rank(part[0])))


def config_label(label: str, overrides: Iterable[str], config_hash_noseed: str, swept: Sequence[str] = ()) -> str:
    """``task3c hidden_sizes=[128] (4c255d1a)``: the run name without the seed, plus the start of config_hash_noseed.

    One value per config_hash_noseed (the hash makes two configs whose overrides read alike distinct), and the same for
    every seed of a config: what the MLflow UI view groups runs by (a bare hash would be an unreadable group label).
    """
    kept = [o for o in overrides if o.lstrip("+~").partition("=")[0] != names.SEED_PARAM]
    return f"{short_number(run_name(label, kept, swept))} ({config_hash_noseed[:8]})"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model.hidden_sizes": [64], ...} from nested dicts (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
