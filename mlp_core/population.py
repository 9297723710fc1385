"""Population training: K members of one shape trained in one fused NumPy pass (`fit_population`).

Members share what makes the fused pass possible (`fusable_key`: hidden sizes, activation, bias convention, batch
size, validations per epoch; and the dataset) and may differ in everything else: lr, momentum, init, seed (so
initial weights and shuffle order), shuffling on or off, epochs, patience, early stopping on or off, restore_best.

How the pass is fused: the K members' parameters, gradients and velocities are three (K, P) buffers carved into
stacked per-layer views (`carve`), so one optimizer step for the whole population is four in-place calls
(`momentum_step` with per-member lr and momentum as (K, 1) columns). Each step gathers every member's own batch into
one (K, B, n_in) buffer (one (B, n_in) batch when all members share their shuffle order: same seed, or no shuffling)
and runs the same forward and backward kernels as `fit` (`forward_pass`, `backward_pass`) on the stack: a matmul over
stacked operands is K BLAS calls inside one NumPy call. (Layer 1 of members that share their batch as one wide GEMM,
x_batch @ [W_0 of every member], measured no faster at one BLAS thread than the K calls: 321 against 318 us for K = 8
of 784-64 at batch 32, both near the thread's ceiling; so the parameters stay member by member.) The full-set
evaluations of a validation point run all members in one pass over the evaluation set, block by block, with stacked
matmuls (`evaluate_stack`).

Numerics: per member, every step does the same float32 operations as `fit` in the same order; what differs is only
the summation order inside one reduction (the loss's picked-logit sum), so results
match `fit` to float32 rounding (tests/core/test_population.py: losses within 1e-5 relative, weights within 1e-5 of
their scale after an epoch). Members never mix: each member's numbers do not depend on which other members share
its pass, and a rerun of the same population is bit-identical.

Benchmark note: K = 64 members of 784-64-10 at batch 32 on MNIST (assignment split, 20,000 training samples) peaked
at 285 MiB resident, 98 MiB above the loaded dataset; memory grows as K x (4 parameter-sized buffers + one batch)
plus an evaluation block of EVAL_ROWS x K x hidden floats (docs/population.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .losses import FusedSoftmaxCE
from .model import MLP, ModelConfig, _Workspace, backward_pass, carve, evaluate_stack, forward_pass
from .optim import momentum_step
from .train import (
    FitResult,
    RunRecord,
    TrainConfig,
    check_dtype,
    check_fit_args,
    epoch_order,
    make_generators,
    training_arrays,
    validation_interval,
)


@dataclass(frozen=True)
class Member:
    """One member of a population: its architecture, its training settings and, optionally, its initial weights
    (an MLP of this architecture or its `parameters()` arrays; by default drawn from train.seed as `fit` does)."""

    model: ModelConfig
    train: TrainConfig
    initial: object = None


FUSABLE_FIELDS = ("hidden_sizes", "activation", "bias", "batch_size", "validations_per_epoch")


def fusable_key(model: ModelConfig, train: TrainConfig) -> tuple:
    """What the members of one population must share (besides the dataset), in the order of FUSABLE_FIELDS."""
    return (model.hidden_sizes, model.activation, model.bias, train.batch_size, train.validations_per_epoch)


def _check_members(dataset, members) -> list[Member]:
    if isinstance(members, (str, bytes)) or not isinstance(members, Sequence) or len(members) == 0:
        raise ValueError(f"members must be a non-empty list of Member(model, train), got {members!r}")
    checked = []
    for index, member in enumerate(members):
        if isinstance(member, tuple) and len(member) in (2, 3):
            member = Member(*member)
        if not isinstance(member, Member):
            raise TypeError(f"members[{index}] must be a Member(model, train), got {type(member).__name__}")
        if not isinstance(member.model, ModelConfig) or not isinstance(member.train, TrainConfig):
            raise TypeError(f"members[{index}] must hold a ModelConfig and a TrainConfig")
        checked.append(member)
    first = fusable_key(checked[0].model, checked[0].train)
    for index, member in enumerate(checked[1:], start=1):
        key = fusable_key(member.model, member.train)
        for name, want, got in zip(FUSABLE_FIELDS, first, key):
            if want != got:
                raise ValueError(
                    f"members[{index}] has {name}={got!r} but members[0] has {want!r}; members of one population "
                    f"must share {', '.join(FUSABLE_FIELDS)}"
                )
    check_fit_args(dataset, checked[0].train)
    return checked


class _Stack:
    """The members still training, stacked on a leading axis of K rows: parameters, gradients and velocities as
    (K, P) buffers with per-layer views, the batch buffers and the workspace of the fused step."""

    def __init__(self, members, params, velocity, lr, momentum, sizes, bias, batch, orders):
        k = len(members)
        dtype = params.dtype
        self.members = list(members)  # member index of each row
        self.index = np.asarray(self.members, dtype=np.intp)
        self.params, self.velocity, self.orders = params, velocity, orders
        self.grads = np.zeros_like(params)
        self.scaled = np.empty_like(params)
        self.lr = lr.reshape(k, 1)
        self.momentum = momentum.reshape(k, 1)
        self._shape = (sizes, bias, batch)
        _, _, self.lin = carve(params, sizes, bias)
        _, _, self.glin = carve(self.grads, sizes, bias)
        self.ws = _Workspace.allocate(sizes, batch, dtype, (k,))
        self.x_batch = np.empty((k, batch, sizes[0]), dtype=dtype)
        self.onehot_batch = np.empty((k, batch, sizes[-1]), dtype=dtype)
        self.x_shared = np.empty((batch, sizes[0]), dtype=dtype)  # the one batch of members that share their order
        self.onehot_shared = np.empty((batch, sizes[-1]), dtype=dtype)
        self.shared = False  # do all rows have the same shuffle order this epoch?
        self.loss = FusedSoftmaxCE(batch, sizes[-1], dtype, members=k)

    def without(self, rows: list[int]) -> "_Stack":
        """A compact stack of the other rows (their state copied; fancy indexing makes contiguous copies)."""
        keep = [r for r in range(len(self.members)) if r not in set(rows)]
        stack = _Stack(
            [self.members[r] for r in keep],
            self.params[keep],
            self.velocity[keep],
            self.lr[keep],
            self.momentum[keep],
            *self._shape,
            self.orders[keep],
        )
        stack.shared = self.shared
        return stack


def fit_population(
    dataset,
    members: Sequence[Member],
    on_event: Callable[[int, object], str | None] | None = None,
    dtype=np.float32,
) -> list[FitResult]:
    """Train every member of `members` (Member(model, train[, initial]), or such tuples) on `dataset` in one fused
    pass; returns one FitResult per member, in order, each with the structure and meaning of `fit`'s. `dtype` is
    float32 or float64, as for `fit`.

    `on_event(member, event)` receives the member's index and the same events `fit` emits for it (TrainLosses,
    ValidationPoint, RunEnd), in step order. Called with a ValidationPoint it may return a non-empty str: that member
    then stops at once after that validation point, with that string as its stop_reason (a non-finite validation loss
    stays "diverged"). A member that stops (early stopping, divergence, its last epoch, or such a request) is frozen
    at once: its result holds the weights of that moment, its RunEnd is emitted, and it leaves the pass before the
    next step. Its wall_time_s is the population's time until then.
    """
    members = _check_members(dataset, members)
    dtype = check_dtype(dtype)
    emit = on_event or (lambda member, event: None)
    started = time.perf_counter()

    x_train, y_train, x_val, y_val, num_classes = training_arrays(dataset, dtype)
    num_train, input_dim = x_train.shape
    first = members[0]
    batch = first.train.batch_size
    steps_per_epoch, val_every = validation_interval(num_train, batch, first.train.validations_per_epoch)
    onehot = np.zeros((num_train, num_classes), dtype=dtype)
    onehot[np.arange(num_train), y_train] = 1.0

    nets, shuffle_rngs = [], []
    for member in members:
        init_rng, shuffle_rng = make_generators(member.train.seed)
        nets.append(MLP(input_dim, member.model, num_classes, rng=init_rng, dtype=dtype))
        if member.initial is not None:
            nets[-1].assign(member.initial)
        shuffle_rngs.append(shuffle_rng)
    activation = nets[0].activation
    sizes, bias = nets[0].sizes, first.model.bias
    count = len(members)
    max_steps = [steps_per_epoch * m.train.epochs for m in members]
    losses = np.zeros((count, max(max_steps)), dtype=dtype)
    records = [RunRecord(losses[k], m.train, lambda event, k=k: emit(k, event)) for k, m in enumerate(members)]
    results: list[FitResult | None] = [None] * count

    stack = _Stack(
        range(count),
        np.stack([net.params for net in nets]),
        np.zeros((count, nets[0].num_parameters), dtype=dtype),
        np.array([m.train.lr for m in members], dtype=dtype),
        np.array([m.train.momentum for m in members], dtype=dtype),
        sizes,
        bias,
        batch,
        np.empty((count, num_train), dtype=np.intp),
    )
    step = 0
    epoch = 0

    def finish(k: int, stop_reason: str, num_steps: int, params: np.ndarray) -> None:
        nets[k].params[...] = params
        results[k] = records[k].finish(nets[k], stop_reason, num_steps, epoch, steps_per_epoch, started, x_val, y_val)

    # A diverging member overflows on its way to a non-finite loss; that is detected and reported as its stop_reason.
    with np.errstate(over="ignore", invalid="ignore"):
        while stack.members:
            within = step % steps_per_epoch
            if within == 0:
                epoch += 1
                for row, k in enumerate(stack.members):
                    if members[k].train.shuffle:
                        stack.orders[row] = epoch_order(shuffle_rngs[k], num_train)
                    else:
                        stack.orders[row] = np.arange(num_train)
                stack.shared = bool((stack.orders == stack.orders[0]).all())
            if stack.shared:  # one gather, broadcast over the members by the matmuls (the same BLAS calls and bits)
                rows = stack.orders[0, within * batch : (within + 1) * batch]
                xb = np.take(x_train, rows, axis=0, out=stack.x_shared)
                yb = np.broadcast_to(np.take(onehot, rows, axis=0, out=stack.onehot_shared), stack.onehot_batch.shape)
            else:
                rows = stack.orders[:, within * batch : (within + 1) * batch]
                xb = np.take(x_train, rows, axis=0, out=stack.x_batch)
                yb = np.take(onehot, rows, axis=0, out=stack.onehot_batch)
            logits = forward_pass(stack.lin, activation, xb, stack.ws)
            batch_loss = stack.loss(logits, yb)  # logits now hold dL/dlogits
            losses[stack.index, step] = batch_loss
            stopped = []
            if not np.isfinite(batch_loss).all():
                for row in np.flatnonzero(~np.isfinite(batch_loss)).tolist():
                    finish(stack.members[row], "diverged", step + 1, stack.params[row])  # before this step's update
                    stopped.append(row)
            backward_pass(stack.lin, stack.glin, activation, xb, stack.ws, logits)
            momentum_step(stack.params, stack.grads, stack.velocity, stack.scaled, stack.lr, stack.momentum)
            if stopped:
                stack = stack.without(stopped)
            if step % val_every == 0 and stack.members:
                val_loss, val_acc = evaluate_stack(stack.lin, activation, x_val, y_val)
                _, train_acc = evaluate_stack(stack.lin, activation, x_train, y_train, loss=False)
                stopped = []
                for row, k in enumerate(stack.members):
                    reason = records[k].validation_point(
                        step, epoch, stack.params[row], float(val_loss[row]), float(val_acc[row]), float(train_acc[row])
                    )
                    if reason:
                        finish(k, reason, step + 1, stack.params[row])
                        stopped.append(row)
                if stopped:
                    stack = stack.without(stopped)
            step += 1
            ended = [row for row, k in enumerate(stack.members) if max_steps[k] == step]
            for row in ended:
                finish(stack.members[row], "max_epochs", step, stack.params[row])
            if ended:
                stack = stack.without(ended)
    return results
