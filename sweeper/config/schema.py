"""Typed schema of the app's config, registered in Hydra's ConfigStore as ``base_config``.

``base_config`` is the first entry of ``conf/config.yaml``'s defaults: every YAML group and every command-line override
is merged into these dataclasses, so unknown keys (a typo, or a ``_target_``), wrong types and unknown choices (Enums)
fail at composition, with Hydra's own message. Value ranges are checked by ``sweeper.config.checks``.
The optimizer has no name field: ``optimizer=sgd`` and ``optimizer=momentum`` are presets of lr and momentum, and a
label that did not change the training made equal configs hash differently.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional

from hydra.core.config_store import ConfigStore


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
    http_max_retries: Optional[int] = None
    http_timeout: Optional[int] = None


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
    """Store the schema as ``base_config``; idempotent (ConfigStore replaces an entry of the same name).

    Called by the entry point (``sweeper.app.register``) before Hydra composes anything, never at import.
    """
    ConfigStore.instance().store(name="base_config", node=AppConfig)
