"""Checks of a composed config that the type system cannot express, run before any data is loaded or run created.

``validate(cfg)`` raises ``ConfigError`` naming the key, the value and the valid range (lr > 0, momentum in [0, 1),
a batch no larger than the training set, ...); ``validate_grid`` composes and checks every job of a sweep before the
first one starts. ``to_core(cfg)`` turns a validated config into mlp_core's frozen dataclasses.
"""
from __future__ import annotations

import functools
import math
from enum import Enum
from typing import Any

from hydra.errors import CompactHydraException

from ..launchers import SweeperKind, sweeper_of
from .identity import effective_hidden_sizes
from .keys import unknown_sweep_key

MAX_VALIDATED_JOBS = 500


class ConfigError(CompactHydraException):
    """A config value outside its valid range. Hydra prints only the message (no traceback) and exits with 1."""


def value(node: Any) -> Any:
    """The plain value of an Enum config node (``Activation.relu`` -> ``"relu"``), anything else unchanged."""
    return node.value if isinstance(node, Enum) else node


@functools.cache
def _schema() -> Any:
    """The schema as a config, built once per process (11 ms a build; every job is checked twice) and read-only."""
    from omegaconf import OmegaConf

    from .schema import AppConfig

    schema = OmegaConf.structured(AppConfig)
    OmegaConf.set_readonly(schema, True)
    return schema


def unknown_keys(cfg: Any, schema: Any = None, prefix: str = "") -> list[str]:
    """Dotted keys of ``cfg`` that the schema does not declare.

    Hydra's ``+key=value`` opens the struct flag and can add keys even to a structured config, so composition alone
    does not stop ``+_target_=...`` or ``+model.widht=3``; this pass does.
    """
    from omegaconf import DictConfig

    schema = _schema() if schema is None else schema
    found = []
    for key in cfg.keys():
        if key == "hydra" and not prefix:
            continue
        if key not in schema:
            found.append(f"{prefix}{key}")
            continue
        child, schema_child = cfg._get_node(key), schema._get_node(key)
        if isinstance(child, DictConfig) and isinstance(schema_child, DictConfig) and not child._is_none():
            found += unknown_keys(child, schema_child, f"{prefix}{key}.")
    return found


def validate(cfg: Any) -> None:
    """Check value ranges of a composed config; raise ConfigError naming key, value and the valid range."""
    unknown = unknown_keys(cfg)
    if unknown:
        raise ConfigError(
            f"Invalid config: unknown key(s) {', '.join(unknown)} (not in the schema of sweeper/config/schema.py; "
            "Hydra's _target_ is not accepted from overrides)."
        )
    errors: list[str] = []

    def need(ok: bool, key: str, value: Any, valid: str) -> None:
        if not ok:
            errors.append(f"{key}={value!r} is invalid: must be {valid}")

    m, o, t = cfg.model, cfg.optimizer, cfg.trainer
    if m.hidden_sizes is not None:
        sizes = list(m.hidden_sizes)
        need(len(sizes) > 0, "model.hidden_sizes", sizes, "a non-empty list of integers >= 1 (or null to use width x depth)")
        need(all(s >= 1 for s in sizes), "model.hidden_sizes", sizes, "a list of integers >= 1")
    else:
        need(m.width >= 1, "model.width", m.width, "an integer >= 1")
        need(m.depth >= 1, "model.depth", m.depth, "an integer >= 1")
    need(math.isfinite(o.lr) and o.lr > 0, "optimizer.lr", o.lr, "a finite number > 0")
    need(0.0 <= o.momentum < 1.0, "optimizer.momentum", o.momentum, "in [0, 1)")
    need(t.epochs >= 1, "trainer.epochs", t.epochs, "an integer >= 1")
    need(t.batch_size >= 1, "trainer.batch_size", t.batch_size, "an integer >= 1")
    need(t.validations_per_epoch >= 1, "trainer.validations_per_epoch", t.validations_per_epoch, "an integer >= 1")
    need(t.early_stopping.patience >= 1, "trainer.early_stopping.patience", t.early_stopping.patience,
         "an integer >= 1 (validation checks)")
    need(t.seed >= 0, "trainer.seed", t.seed, "an integer >= 0")
    need(t.blas_threads is None or t.blas_threads >= 1, "trainer.blas_threads", t.blas_threads,
         "null (automatic) or an integer >= 1")
    need(bool(str(cfg.tracking.experiment_name).strip()), "tracking.experiment_name", cfg.tracking.experiment_name,
         "a non-empty name")
    for key, low in (("http_max_retries", 0), ("http_timeout", 1)):
        setting = cfg.tracking.get(key)
        need(setting is None or setting >= low, f"tracking.{key}", setting, f"null (automatic) or an integer >= {low}")

    from mlp_core import split_sizes, validate_data_args

    data_name, split = value(cfg.data.name), value(cfg.data.split)
    try:
        validate_data_args(data_name, split, value(cfg.data.normalization))
    except ValueError as exc:
        errors.append(f"data: {exc}")
    else:
        if t.batch_size >= 1:
            _check_sizes(errors, split_sizes(data_name, split).train, t.batch_size, t.validations_per_epoch,
                         f"{data_name}/{split}")
    if not errors:
        _check_memory(errors, cfg, split_sizes(data_name, split))
    if errors:
        raise ConfigError("Invalid config: " + "; ".join(errors) + ".")


def _check_sizes(errors: list[str], train_size: int, batch_size: int, validations_per_epoch: int, what: str) -> None:
    if batch_size > train_size:
        errors.append(f"trainer.batch_size={batch_size} is invalid: must be <= the {train_size} training images of {what}")
        return
    steps_per_epoch = train_size // batch_size
    if validations_per_epoch > steps_per_epoch:
        errors.append(
            f"trainer.validations_per_epoch={validations_per_epoch} is invalid: must be <= the {steps_per_epoch} "
            f"steps per epoch of {what} at batch_size={batch_size}"
        )


def _check_memory(errors: list[str], cfg: Any, sizes: Any) -> None:
    """A model whose training buffers alone exceed this machine's memory is refused before it allocates any."""
    from mlp_core import machine_memory, num_parameters, training_memory

    have = machine_memory()
    model, train = to_core(cfg)
    need = training_memory(sizes.input_dim, model, sizes.num_classes, train.batch_size, max(sizes.train, sizes.val))
    if have is not None and need > have:
        m = cfg.model
        key = (f"model.hidden_sizes={list(m.hidden_sizes)}" if m.hidden_sizes is not None
               else f"model.width={m.width} x model.depth={m.depth}")
        errors.append(f"{key} is too large for this machine: its "
                      f"{num_parameters(sizes.input_dim, model, sizes.num_classes):,} parameters need about "
                      f"{need / 2**30:,.1f} GiB to train (parameters, gradients, momentum, activations), more than "
                      f"the {have / 2**30:,.1f} GiB of memory the machine has")


def to_core(cfg: Any):
    """Return (ModelConfig, TrainConfig) of mlp_core for a validated config."""
    from mlp_core import ModelConfig, TrainConfig

    m, o, t = cfg.model, cfg.optimizer, cfg.trainer
    model = ModelConfig(
        hidden_sizes=effective_hidden_sizes(m),
        activation=value(m.activation),
        init=value(m.init),
        bias=value(m.bias),
    )
    train = TrainConfig(
        epochs=int(t.epochs),
        batch_size=int(t.batch_size),
        lr=float(o.lr),
        momentum=float(o.momentum),
        shuffle=bool(t.shuffle),
        validations_per_epoch=int(t.validations_per_epoch),
        early_stopping=bool(t.early_stopping.enabled),
        patience=int(t.early_stopping.patience),
        restore_best=bool(t.early_stopping.restore_best),
        seed=int(t.seed),
    )
    return model, train


def expand_grid(config: Any) -> list[list[str]] | None:
    """The override lists of every job, as Hydra's BasicSweeper builds them (None for other sweepers). The confirm
    sweeper's first round is such a grid (it adds seeds later: ``sweep.confirm``).

    Grid params of ``hydra.sweeper.params`` come first, then the command line, whose value wins for the same key.
    """
    if sweeper_of(config.hydra) not in (SweeperKind.BASIC, SweeperKind.CONFIRM):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task))
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def validate_grid(config: Any, jobs: list[list[str]] | None = None) -> None:
    """Compose and range-check every job of the sweep (``jobs``, by default the grid's) before any job starts and
    before any MLflow run exists. The launcher then takes each job's config from this composition
    (``compose.compose_job``) instead of composing it again."""
    from hydra.errors import ConfigCompositionException

    from .compose import compose_job

    jobs = expand_grid(config) if jobs is None else jobs
    if jobs == []:  # e.g. model.width=range(5,5): Hydra would launch nothing and exit 0
        sweeps = [o for o in config.hydra.overrides.task if not o.startswith("hydra")]
        raise ConfigError(f"this sweep is empty: {' '.join(sweeps)} expands to no job (a sweep needs at least one "
                          "value per swept key, e.g. model.width=32,64 or range(32,129,32))")
    if jobs is None or len(jobs) > MAX_VALIDATED_JOBS:  # huge grids: each job still validates itself
        return
    errors = []
    for number, job in enumerate(jobs):
        try:
            validate(compose_job(config, job))
        except (ConfigError, ConfigCompositionException) as exc:
            if (typo := unknown_sweep_key(config)) is not None:  # a misspelled key, named with the closest one
                raise ConfigError(typo) from None
            errors.append(f"job #{number} ({' '.join(job)}): {exc}".replace("\n", " "))
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{len(errors)} of {len(jobs)} jobs of this sweep are invalid, none was started: "
                          f"{errors[0]}{more}")
