"""The training loop (SPEC "Training"): seeded shuffling, drop-last batches, validation every
steps_per_epoch // validations_per_epoch steps (after that step's update, starting at global step 0), early stopping on
the validation loss, divergence detection, and one event seam for observers."""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from .early_stopping import StopRule
from .losses import FusedSoftmaxCE
from .model import MLP, ModelConfig
from .optim import SGD

STOP_REASONS = ("max_epochs", "early_stopping", "diverged")  # or the string an observer returned (see fit)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults are the course's (SPEC): 50 epochs, batch 32, lr 0.1, no momentum, 5 validations per
    epoch, early stopping with patience 50 validation checks, best weights not restored."""

    epochs: int = 50
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.0
    shuffle: bool = True
    validations_per_epoch: int = 5
    early_stopping: bool = True
    patience: int = 50
    restore_best: bool = False
    seed: int = 0

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        def need_int(name, minimum):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        need_int("epochs", 1)
        need_int("batch_size", 1)
        need_int("validations_per_epoch", 1)
        need_int("patience", 1)
        need_int("seed", 0)
        lr, momentum = self.lr, self.momentum
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")


# ------------------------------------------------------------------ events
@dataclass(frozen=True)
class TrainLosses:
    """A batch of per-step mini-batch losses (each computed before that step's update)."""

    steps: np.ndarray  # (k,) int64 global steps
    losses: np.ndarray  # (k,) float32


@dataclass(frozen=True)
class ValidationPoint:
    step: int
    epoch: int
    train_loss: float  # mean mini-batch loss over the steps since the previous validation point
    train_accuracy: float  # on the full training split
    val_loss: float
    val_accuracy: float


@dataclass(frozen=True)
class RunEnd:
    result: "FitResult"


Event = Union[TrainLosses, ValidationPoint, RunEnd]


@dataclass
class FitResult:
    model: MLP
    train_loss: np.ndarray  # (num_steps,) float32; index = global step
    val_steps: np.ndarray  # (P,) int64
    val_loss: np.ndarray  # (P,) float64
    val_accuracy: np.ndarray
    train_accuracy: np.ndarray
    best_val_loss: float
    best_val_loss_step: int
    best_val_accuracy: float
    best_val_accuracy_step: int
    final_val_loss: float  # of the returned model (after restore_best), on the validation split
    final_val_accuracy: float
    stop_reason: str
    num_steps: int
    epochs: int  # epochs started, a partial last one included
    steps_per_epoch: int
    wall_time_s: float
    num_parameters: int

    def history_rows(self) -> list[dict]:
        """One row per step: step, train_loss, and the validation columns where a validation point exists."""
        points = {
            int(s): (float(ta), float(vl), float(va))
            for s, ta, vl, va in zip(self.val_steps, self.train_accuracy, self.val_loss, self.val_accuracy)
        }
        rows = []
        for step, loss in enumerate(self.train_loss.tolist()):
            ta, vl, va = points.get(step, (None, None, None))
            rows.append(
                {"step": step, "train_loss": loss, "train_accuracy": ta, "val_loss": vl, "val_accuracy": va}
            )
        return rows


def make_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """One seed -> independent (init, shuffle) generators via SeedSequence.spawn; the global RNG is never touched."""
    init_seq, shuffle_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_seq), np.random.default_rng(shuffle_seq)


def validation_interval(num_train: int, batch_size: int, validations_per_epoch: int) -> tuple[int, int]:
    """(steps_per_epoch, steps between validation points). The last partial batch is dropped."""
    steps_per_epoch = num_train // batch_size
    return steps_per_epoch, max(1, steps_per_epoch // validations_per_epoch)


def epoch_order(shuffle_rng: np.random.Generator, num_train: int) -> np.ndarray:
    """The order in which one shuffled epoch visits the training samples: a permutation of range(num_train).

    A run seeded `seed` draws epoch e's order (e = 1, 2, ...) as the e-th call of this function on the shuffle
    generator of `make_generators(seed)`; its steps take consecutive slices of batch_size from it, the last partial
    batch dropped. Without shuffling an epoch visits the samples in file order."""
    return shuffle_rng.permutation(num_train)


FIT_DTYPES = ("float32", "float64")


def check_dtype(dtype) -> np.dtype:
    try:
        found = np.dtype(dtype)
    except TypeError:
        found = None
    if found is None or found.name not in FIT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(FIT_DTYPES)}, got {dtype!r}")
    return found


def check_fit_args(dataset, train: TrainConfig) -> None:
    """Boundary checks that need the data: raise ValueError before any work starts."""
    n = len(dataset.train.y)
    if train.batch_size > n:
        raise ValueError(
            f"batch_size {train.batch_size} is larger than the training split ({n} samples of "
            f"{dataset.name}/{dataset.split}); choose 1..{n}"
        )
    if len(dataset.val.y) == 0:
        raise ValueError(f"the validation split of {dataset.name}/{dataset.split} is empty")


def training_arrays(dataset, dtype) -> tuple:
    """(x_train, y_train, x_val, y_val, num_classes): the inputs contiguous in the training dtype."""
    x_train = np.ascontiguousarray(dataset.train.x, dtype=dtype)
    x_val = np.ascontiguousarray(dataset.val.x, dtype=dtype)
    num_classes = int(getattr(dataset, "num_classes", 10))
    return x_train, np.asarray(dataset.train.y), x_val, np.asarray(dataset.val.y), num_classes


class RunRecord:
    """One run's record while it trains, kept alike by `fit` and by `fit_population` for each member: its per-step
    losses, its validation points, the losses already emitted, and its StopRule. Emitting a validation point, the stop
    reason, restore_best and the final evaluation live here once, so the two engines cannot drift apart.

    `losses` is the run's (max_steps,) loss buffer, written by the engine; `emit(event)` is the run's observer."""

    def __init__(self, losses: np.ndarray, train: TrainConfig, emit: Callable[[Event], object]):
        self.losses = losses
        self.emit = emit
        self.rule = StopRule(train)
        self.val_steps: list[int] = []
        self.val_loss: list[float] = []
        self.val_acc: list[float] = []
        self.train_acc: list[float] = []
        self.flushed = 0

    def flush(self, upto: int) -> None:
        """Emit the losses of steps [flushed, upto) as one TrainLosses batch."""
        if upto > self.flushed:
            steps = np.arange(self.flushed, upto, dtype=np.int64)
            self.emit(TrainLosses(steps, self.losses[self.flushed : upto].copy()))
            self.flushed = upto

    def validation_point(
        self, step: int, epoch: int, params: np.ndarray, val_loss: float, val_acc: float, train_acc: float
    ) -> str:
        """Record and emit the validation point after `step`'s update (`params`: the weights there); return why the
        run stops here, or ""."""
        self.flush(step + 1)
        since = self.losses[self.val_steps[-1] + 1 if self.val_steps else 0 : step + 1]
        self.val_steps.append(step)
        self.val_loss.append(val_loss)
        self.val_acc.append(val_acc)
        self.train_acc.append(train_acc)
        train_loss = float(since.mean(dtype=np.float64))
        verdict = self.emit(ValidationPoint(step, epoch, train_loss, train_acc, val_loss, val_acc))
        return self.rule.at_validation_point(val_loss, params, verdict)

    def final_evaluation(self, net: MLP, restored: bool, num_steps: int, x_val, y_val) -> tuple[float, float]:
        """(validation loss, accuracy) of the model the run returns. A validation point already measured these
        weights when they were restored (the best point) or when the last step was one; otherwise one pass over the
        validation set measures them."""
        if restored:
            return self.val_loss[self.rule.best_point], self.val_acc[self.rule.best_point]
        if self.val_steps and self.val_steps[-1] == num_steps - 1:
            return self.val_loss[-1], self.val_acc[-1]
        with np.errstate(over="ignore", invalid="ignore"):  # a diverged run's weights may overflow
            return net.evaluate(x_val, y_val)

    def finish(
        self,
        net: MLP,
        stop_reason: str,
        num_steps: int,
        epochs: int,
        steps_per_epoch: int,
        started: float,
        x_val: np.ndarray,
        y_val: np.ndarray,
    ) -> FitResult:
        """End the run with `net` holding its last weights: restore the best ones if asked, evaluate the final model,
        emit the remaining losses and the RunEnd; the FitResult."""
        restored = self.rule.restore(net.params, stop_reason)
        final = self.final_evaluation(net, restored, num_steps, x_val, y_val)
        self.flush(num_steps)
        vl_arr = np.asarray(self.val_loss, dtype=np.float64)
        va_arr = np.asarray(self.val_acc, dtype=np.float64)
        if len(vl_arr):
            finite = np.where(np.isfinite(vl_arr), vl_arr, np.inf)
            best_l = int(np.argmin(finite))
            best_a = int(np.argmax(va_arr))
            best = (float(vl_arr[best_l]), self.val_steps[best_l], float(va_arr[best_a]), self.val_steps[best_a])
        else:
            best = (math.nan, -1, math.nan, -1)
        result = FitResult(
            model=net,
            train_loss=self.losses[:num_steps].copy(),
            val_steps=np.asarray(self.val_steps, dtype=np.int64),
            val_loss=vl_arr,
            val_accuracy=va_arr,
            train_accuracy=np.asarray(self.train_acc, dtype=np.float64),
            best_val_loss=best[0],
            best_val_loss_step=best[1],
            best_val_accuracy=best[2],
            best_val_accuracy_step=best[3],
            final_val_loss=float(final[0]),
            final_val_accuracy=float(final[1]),
            stop_reason=stop_reason,
            num_steps=num_steps,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            wall_time_s=time.perf_counter() - started,
            num_parameters=net.num_parameters,
        )
        self.emit(RunEnd(result))
        return result


def fit(
    dataset,
    model: ModelConfig,
    train: TrainConfig,
    on_event: Callable[[Event], str | None] | None = None,
    *,
    dtype=np.float32,
    initial=None,
) -> FitResult:
    """Train an MLP on `dataset` (an mlp_core Dataset: train/val Splits of float32 x (N, D) and int labels y (N,)).

    Returns a FitResult with full histories. `on_event` receives TrainLosses batches (at each validation point and at
    the end), ValidationPoints and a final RunEnd. The same seed gives bit-identical weights and histories.

    An observer may ask `fit` to stop: when `on_event` returns a non-empty `str` for a ValidationPoint, `fit` stops at
    once after that validation point (no further step touches the weights) and that string becomes
    `FitResult.stop_reason` (e.g. "pruned"), unless that point's validation loss is not finite: then it is "diverged",
    as always. Any other return value (None) changes nothing.

    With `train.restore_best` the returned model holds the weights of the best validation point (the point where the
    run stopped is a candidate too, whatever stopped it), unless the run diverged.

    `dtype` is float32 (the course's) or float64 (for checking results). `initial`, an MLP of this architecture or
    its `parameters()` arrays, replaces the drawn initial weights (the seed still draws the shuffle order).
    """
    if not isinstance(model, ModelConfig):
        raise TypeError(f"model must be a ModelConfig, got {type(model).__name__}")
    if not isinstance(train, TrainConfig):
        raise TypeError(f"train must be a TrainConfig, got {type(train).__name__}")
    check_fit_args(dataset, train)
    dtype = check_dtype(dtype)
    emit = on_event or (lambda event: None)
    started = time.perf_counter()

    x_train, y_train, x_val, y_val, num_classes = training_arrays(dataset, dtype)
    num_train, input_dim = x_train.shape

    init_rng, shuffle_rng = make_generators(train.seed)
    net = MLP(input_dim, model, num_classes, rng=init_rng, dtype=dtype)
    if initial is not None:
        net.assign(initial)
    optimizer = SGD(train.lr, train.momentum)
    optimizer.init(net.params)
    loss_fn = FusedSoftmaxCE(train.batch_size, num_classes, dtype)

    batch = train.batch_size
    steps_per_epoch, val_every = validation_interval(num_train, batch, train.validations_per_epoch)
    max_steps = steps_per_epoch * train.epochs
    onehot = np.zeros((num_train, num_classes), dtype=dtype)
    onehot[np.arange(num_train), y_train] = 1.0
    # Each step gathers its 32 rows into buffers allocated once (~9 us); shuffling the whole 20k x 784 array every
    # epoch instead costs ~20 ms, i.e. ~30 us per step. Without shuffling, batches are views in file order.
    x_batch = np.empty((batch, input_dim), dtype=dtype)
    onehot_batch = np.empty((batch, num_classes), dtype=dtype)
    order = np.arange(num_train)
    ws = net._workspace(batch)

    losses = np.empty(max_steps, dtype=dtype)
    record = RunRecord(losses, train, emit)
    stop_reason = ""
    step = 0
    epoch = 0

    forward, backward, update = net._forward, net._backward, optimizer.step
    params, grads = net.params, net.grads
    # A diverging run overflows on its way to a non-finite loss; that is detected and reported as stop_reason.
    with np.errstate(over="ignore", invalid="ignore"):
        while epoch < train.epochs and not stop_reason:
            if train.shuffle:
                order = epoch_order(shuffle_rng, num_train)
            epoch += 1
            for i in range(steps_per_epoch):
                lo = i * batch
                if train.shuffle:
                    rows = order[lo : lo + batch]
                    xb = np.take(x_train, rows, axis=0, out=x_batch)
                    yb = np.take(onehot, rows, axis=0, out=onehot_batch)
                else:
                    xb = x_train[lo : lo + batch]
                    yb = onehot[lo : lo + batch]
                logits = forward(xb, ws)
                loss = loss_fn(logits, yb)  # logits now hold dL/dlogits
                losses[step] = loss
                if not math.isfinite(loss):
                    stop_reason = "diverged"
                    step += 1
                    break
                backward(xb, ws, logits)
                update(params, grads)
                if step % val_every == 0:
                    vl, va = net.evaluate(x_val, y_val)
                    ta = net.accuracy(x_train, y_train)
                    stop_reason = record.validation_point(step, epoch, params, vl, va, ta)
                    if stop_reason:
                        step += 1
                        break
                step += 1

    return record.finish(net, stop_reason or "max_epochs", step, epoch, steps_per_epoch, started, x_val, y_val)
