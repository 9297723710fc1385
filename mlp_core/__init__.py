"""mlp_core: a from-scratch NumPy multilayer perceptron for the course's MNIST experiments.

Pure NumPy and the standard library (scikit-learn is imported lazily, only for the tiny `digits` dataset).

    from mlp_core import load_dataset, ModelConfig, TrainConfig, fit
    data = load_dataset("mnist", split="assignment")
    result = fit(data, ModelConfig(hidden_sizes=(64,)), TrainConfig(epochs=5))
    result.val_accuracy[-1], result.model.predict(data.val.x[:5])
    results = fit_population(data, [Member(ModelConfig((64,)), TrainConfig(lr=lr)) for lr in (0.05, 0.1)])
"""

from .activations import ACTIVATIONS
from .data import Dataset, Split, SplitSizes, load_dataset, split_sizes, validate_data_args
from .early_stopping import EarlyStopping
from .gradcheck import GradCheckReport, gradient_check
from .init import INITS
from .losses import cross_entropy, softmax
from .model import BIAS_CONVENTIONS, MLP, ModelConfig, machine_memory, num_parameters, training_memory
from .optim import SGD
from .population import FUSABLE_FIELDS, Member, fit_population, fusable_key
from .idx import DataError, read_idx, write_idx
from .train import (
    STOP_REASONS,
    FitResult,
    RunEnd,
    TrainConfig,
    TrainLosses,
    ValidationPoint,
    epoch_order,
    fit,
    make_generators,
    validation_interval,
)

__all__ = [
    "ACTIVATIONS",
    "FUSABLE_FIELDS",
    "BIAS_CONVENTIONS",
    "INITS",
    "STOP_REASONS",
    "DataError",
    "Dataset",
    "EarlyStopping",
    "FitResult",
    "GradCheckReport",
    "MLP",
    "Member",
    "ModelConfig",
    "RunEnd",
    "SGD",
    "Split",
    "SplitSizes",
    "TrainConfig",
    "TrainLosses",
    "ValidationPoint",
    "cross_entropy",
    "epoch_order",
    "fit",
    "fit_population",
    "fusable_key",
    "gradient_check",
    "load_dataset",
    "machine_memory",
    "make_generators",
    "num_parameters",
    "read_idx",
    "softmax",
    "split_sizes",
    "training_memory",
    "validate_data_args",
    "validation_interval",
    "write_idx",
]
