"""Typed schema of the app's config, and the range checks that run before any MLflow run exists.

Two layers:
1. Dataclasses registered in Hydra's ConfigStore as ``base_config`` (the first entry of ``conf/config.yaml``'s
   defaults). Every YAML group and every command-line override is merged into them, so unknown keys (a typo, or a
   ``_target_``), wrong types and unknown choices (Enums) fail at composition, with Hydra's own message.
2. ``validate(cfg)``: value ranges the type system cannot express (lr > 0, momentum in [0, 1), ...). It raises
   ``ConfigError`` naming the key, the value and the valid range. ``validate_against_dataset`` adds the checks that
   need the training-set size.

``to_core(cfg)`` turns a validated config into mlp_core's frozen dataclasses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.errors import CompactHydraException


class Activation(Enum):
    sigmoid = "sigmoid"
    improved_sigmoid = "improved_sigmoid"
    relu = "relu"
    tanh = "tanh"


class Init(Enum):
    uniform = "uniform"
    fan_in = "fan_in"
    he = "he"
    xavier = "xavier"


class Bias(Enum):
    input_only = "input_only"
    per_layer = "per_layer"


class DatasetName(Enum):
    mnist = "mnist"
    digits = "digits"


class SplitName(Enum):
    assignment = "assignment"
    standard = "standard"
    default = "default"


class Normalization(Enum):
    train = "train"
    per_split = "per_split"
    full_train = "full_train"
    none = "none"


class OptimizerName(Enum):
    sgd = "sgd"
    momentum = "momentum"


@dataclass
class DataConf:
    name: DatasetName = DatasetName.mnist
    split: SplitName = SplitName.assignment
    root: Optional[str] = None
    normalization: Normalization = Normalization.train
    allow_download: bool = True


@dataclass
class ModelConf:
    hidden_sizes: Optional[List[int]] = None
    width: int = 64
    depth: int = 1
    activation: Activation = Activation.sigmoid
    init: Init = Init.uniform
    bias: Bias = Bias.input_only


@dataclass
class OptimizerConf:
    name: OptimizerName = OptimizerName.sgd
    lr: float = 0.1
    momentum: float = 0.0


@dataclass
class EarlyStoppingConf:
    enabled: bool = True
    patience: int = 50
    restore_best: bool = False


@dataclass
class TrainerConf:
    epochs: int = 50
    batch_size: int = 32
    shuffle: bool = True
    validations_per_epoch: int = 5
    early_stopping: EarlyStoppingConf = field(default_factory=EarlyStoppingConf)
    seed: int = 0
    blas_threads: Optional[int] = None


@dataclass
class TrackingConf:
    enabled: bool = True
    uri: Optional[str] = None
    artifact_location: Optional[str] = None
    experiment_name: str = "mlp-sweeps"
    skip_finished: bool = True
    background_metrics: bool = False


@dataclass
class AppConfig:
    name: str = "default"
    sweep_name: Optional[str] = None
    data: DataConf = field(default_factory=DataConf)
    model: ModelConf = field(default_factory=ModelConf)
    optimizer: OptimizerConf = field(default_factory=OptimizerConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)


def register_configs() -> None:
    """Store the schema as ``base_config``; idempotent (ConfigStore replaces an entry of the same name)."""
    ConfigStore.instance().store(name="base_config", node=AppConfig)


class ConfigError(CompactHydraException):
    """A config value outside its valid range. Hydra prints only the message (no traceback) and exits with 1."""


# Training-set sizes that are known without loading anything (digits depends on the core's split: checked after load).
KNOWN_TRAIN_SIZES = {("mnist", "assignment"): 20_000, ("mnist", "standard"): 55_000}


def _value(node: Any) -> Any:
    return node.value if isinstance(node, Enum) else node


def effective_hidden_sizes(model: Any) -> tuple[int, ...]:
    """An explicit ``hidden_sizes`` wins; otherwise ``depth`` layers of ``width`` units."""
    if model.hidden_sizes is not None:
        return tuple(int(h) for h in model.hidden_sizes)
    return (int(model.width),) * int(model.depth)


def unknown_keys(cfg: Any, schema: Any = None, prefix: str = "") -> list[str]:
    """Dotted keys of ``cfg`` that the schema does not declare.

    Hydra's ``+key=value`` opens the struct flag and can add keys even to a structured config, so composition alone
    does not stop ``+_target_=...`` or ``+model.widht=3``; this pass does.
    """
    from omegaconf import DictConfig, OmegaConf

    schema = OmegaConf.structured(AppConfig) if schema is None else schema
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
            f"Invalid config: unknown key(s) {', '.join(unknown)} (not in the schema of sweeper/schema.py; "
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

    data_name, split = _value(cfg.data.name), _value(cfg.data.split)
    train_size = KNOWN_TRAIN_SIZES.get((data_name, split))
    if train_size is not None and t.batch_size >= 1:
        _check_sizes(errors, train_size, t.batch_size, t.validations_per_epoch, f"{data_name}/{split}")
    if not errors:
        from mlp_core import validate_data_args

        try:
            validate_data_args(data_name, split, _value(cfg.data.normalization))
        except ValueError as exc:
            errors.append(f"data: {exc}")
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


def validate_against_dataset(cfg: Any, train_size: int, what: str) -> None:
    """Checks that need the loaded training-set size (e.g. for digits, whose split the core decides)."""
    errors: list[str] = []
    _check_sizes(errors, train_size, cfg.trainer.batch_size, cfg.trainer.validations_per_epoch, what)
    if errors:
        raise ConfigError("Invalid config: " + "; ".join(errors) + ".")


def to_core(cfg: Any):
    """Return (ModelConfig, TrainConfig) of mlp_core for a validated config."""
    from mlp_core import ModelConfig, TrainConfig

    m, o, t = cfg.model, cfg.optimizer, cfg.trainer
    model = ModelConfig(
        hidden_sizes=effective_hidden_sizes(m),
        activation=_value(m.activation),
        init=_value(m.init),
        bias=_value(m.bias),
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
