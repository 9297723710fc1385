"""The training loop against SPEC: cadence, early stopping, momentum, determinism, dtypes, events."""

import dataclasses
import math

import numpy as np
import pytest

from mlp_core import (
    MLP,
    EarlyStopping,
    ModelConfig,
    RunEnd,
    TrainConfig,
    TrainLosses,
    ValidationPoint,
    fit,
    make_generators,
    validation_interval,
)

from .conftest import synthetic_dataset


def test_validation_cadence_for_20k_samples_at_batch_32():
    data = synthetic_dataset(n_train=20_000, n_val=50, dim=3)
    assert validation_interval(20_000, 32, 5) == (625, 125)
    result = fit(data, ModelConfig((4,)), TrainConfig(epochs=2, early_stopping=False))
    assert result.steps_per_epoch == 625 and result.num_steps == 1250 and len(result.train_loss) == 1250
    np.testing.assert_array_equal(result.val_steps, np.arange(0, 1250, 125))  # 0, 125, ..., 1125: 5 per epoch
    assert result.stop_reason == "max_epochs" and result.epochs == 2


def test_drop_last_partial_batch():
    data = synthetic_dataset(n_train=100, n_val=20)
    result = fit(data, ModelConfig((4,)), TrainConfig(epochs=3, batch_size=32, validations_per_epoch=1))
    assert result.steps_per_epoch == 3 and result.num_steps == 9  # 100 // 32 = 3; the 4 left over are dropped
    np.testing.assert_array_equal(result.val_steps, [0, 3, 6])


def test_events_deliver_every_step_once_in_batches(small_data):
    events = []
    result = fit(small_data, ModelConfig((8,)), TrainConfig(epochs=3), on_event=events.append)
    batches = [e for e in events if isinstance(e, TrainLosses)]
    points = [e for e in events if isinstance(e, ValidationPoint)]
    assert isinstance(events[-1], RunEnd) and events[-1].result is result
    steps = np.concatenate([b.steps for b in batches])
    np.testing.assert_array_equal(steps, np.arange(result.num_steps))
    np.testing.assert_array_equal(np.concatenate([b.losses for b in batches]), result.train_loss)
    assert len(batches) <= len(points) + 1  # batched: never one call per step
    assert [p.step for p in points] == result.val_steps.tolist()
    assert [p.val_loss for p in points] == result.val_loss.tolist()
    # each point's train_loss is the mean of the mini-batch losses since the previous point
    assert points[1].train_loss == pytest.approx(float(result.train_loss[1 : points[1].step + 1].mean()), rel=1e-6)


def test_learns_a_learnable_problem(small_data):
    result = fit(small_data, ModelConfig((32,), init="fan_in", activation="improved_sigmoid"), TrainConfig(epochs=20))
    assert result.val_accuracy[0] < 0.6 and result.best_val_accuracy > 0.8
    assert result.train_loss[-20:].mean() < result.train_loss[:20].mean() / 2


def test_same_seed_is_bit_identical_and_other_seed_differs(small_data):
    config = ModelConfig((16, 8), activation="relu", init="he", bias="per_layer")
    train = TrainConfig(epochs=3, lr=0.05, momentum=0.9, seed=7)
    a, b = fit(small_data, config, train), fit(small_data, config, train)
    np.testing.assert_array_equal(a.model.params, b.model.params)
    np.testing.assert_array_equal(a.train_loss, b.train_loss)
    np.testing.assert_array_equal(a.val_loss, b.val_loss)
    c = fit(small_data, config, TrainConfig(epochs=3, lr=0.05, momentum=0.9, seed=8))
    assert not np.array_equal(a.train_loss, c.train_loss)


def test_everything_stays_float32(small_data):
    result = fit(small_data, ModelConfig((8,)), TrainConfig(epochs=1, momentum=0.9, lr=0.02))
    model = result.model
    assert model.params.dtype == np.float32 and model.grads.dtype == np.float32
    assert all(w.dtype == np.float32 for w in model.weights)
    assert result.train_loss.dtype == np.float32
    assert model.predict_logits(small_data.val.x).dtype == np.float32


def _reference_training(data, weights, lr, momentum, epochs, batch, seed):
    """An independent, naive float64 implementation of SPEC's training (sigmoid, bias trick, momentum) from the given
    weights, shuffled by the seed's shuffle generator: (per-step losses, final weights)."""
    _, shuffle_rng = make_generators(seed)
    weights = [np.array(w, dtype=np.float64) for w in weights]
    velocity = [np.zeros_like(w) for w in weights]
    x_all = np.hstack([data.train.x.astype(np.float64), np.ones((len(data.train.y), 1))])
    y_all = data.train.y
    losses = []
    for _ in range(epochs):
        order = shuffle_rng.permutation(len(y_all))
        for i in range(len(y_all) // batch):
            idx = order[i * batch : (i + 1) * batch]
            x, y = x_all[idx], y_all[idx]
            acts = [x]
            for w in weights[:-1]:
                acts.append(1 / (1 + np.exp(-(acts[-1] @ w))))
            z = acts[-1] @ weights[-1]
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            target = np.eye(10)[y]
            losses.append(-np.mean(np.sum(target * np.log(p), axis=1)))
            delta = (p - target) / batch
            grads = [None] * len(weights)
            for layer in range(len(weights) - 1, -1, -1):
                grads[layer] = acts[layer].T @ delta
                if layer:
                    delta = (delta @ weights[layer].T) * acts[layer] * (1 - acts[layer])
            for w, v, g in zip(weights, velocity, grads):
                v[...] = g + momentum * v
                w -= lr * v
    return np.array(losses), weights


def _reference_losses(data, hidden, lr, momentum, epochs, batch, seed):
    init_rng, _ = make_generators(seed)
    init_model = MLP(data.input_dim, ModelConfig(hidden), rng=init_rng, dtype=np.float64)
    return _reference_training(data, init_model.weights, lr, momentum, epochs, batch, seed)[0]


@pytest.mark.parametrize("momentum,lr", [(0.0, 0.1), (0.9, 0.02)])
def test_training_matches_a_naive_float64_reference(small_data, momentum, lr):
    train = TrainConfig(epochs=3, batch_size=32, lr=lr, momentum=momentum, seed=3, early_stopping=False)
    result = fit(small_data, ModelConfig((12, 9)), train)
    expected = _reference_losses(small_data, (12, 9), lr, momentum, 3, 32, seed=3)
    assert len(expected) == result.num_steps == 60
    np.testing.assert_allclose(result.train_loss, expected, rtol=2e-5, atol=2e-6)


def test_early_stopping_trace_with_ties():
    stopper = EarlyStopping(patience=3)
    trace = [stopper.update(v) for v in [1.0, 0.8, 0.8, 0.9, 0.8]]
    # 0.8 ties the best: not an improvement; the best (check 1) is 3 checks old at check 4
    assert trace == [(True, False), (True, False), (False, False), (False, False), (False, True)]


def test_early_stopping_resets_on_strict_improvement():
    stopper = EarlyStopping(patience=2)
    trace = [stopper.update(v) for v in [3.0, 3.5, 2.9, 3.0, 2.9]]
    assert trace == [(True, False), (False, False), (True, False), (False, False), (False, True)]


@pytest.mark.parametrize("patience", [0, -1, 2.5, True])
def test_early_stopping_rejects_bad_patience(patience):
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        EarlyStopping(patience)


def _scripted_validation(monkeypatch, n_val, script):
    """Replace the validation loss by a script; also record the parameters seen at each validation check."""
    seen = []
    real = MLP.evaluate

    def evaluate(self, x, y, chunk_size=2048):
        if len(y) != n_val:
            return real(self, x, y, chunk_size)
        seen.append(self.params.copy())
        return script[len(seen) - 1], 0.5

    monkeypatch.setattr(MLP, "evaluate", evaluate)
    return seen


def test_early_stop_falls_mid_epoch(monkeypatch):
    data = synthetic_dataset(n_train=320, n_val=40)  # 10 steps per epoch, a validation every 2 steps
    _scripted_validation(monkeypatch, 40, [3.0, 2.0, 2.0, 2.5, 2.0, 2.1, 1.0, 1.0])
    result = fit(data, ModelConfig((4,)), TrainConfig(epochs=5, patience=4))
    # best at check 1 (step 2); checks 2..5 do not improve (2.0 is a tie) -> stop at check 5 = step 10
    assert result.stop_reason == "early_stopping"
    np.testing.assert_array_equal(result.val_steps, [0, 2, 4, 6, 8, 10])
    assert result.num_steps == 11 and result.epochs == 2  # the second epoch stopped after its first step
    assert result.best_val_loss == 2.0 and result.best_val_loss_step == 2
    assert result.final_val_loss == 2.1


def test_restore_best_weights_is_optional(monkeypatch):
    data = synthetic_dataset(n_train=320, n_val=40)
    script = [3.0, 1.0, 2.0, 2.0, 2.0]
    seen = _scripted_validation(monkeypatch, 40, script)
    kept = fit(data, ModelConfig((4,)), TrainConfig(epochs=5, patience=3))
    assert not np.array_equal(kept.model.params, seen[1])  # the course keeps the last weights
    seen.clear()
    restored = fit(data, ModelConfig((4,)), TrainConfig(epochs=5, patience=3, restore_best=True))
    np.testing.assert_array_equal(restored.model.params, seen[1])


def test_divergence_stops_at_once():
    data = synthetic_dataset(n_train=640, n_val=50)
    events = []
    result = fit(data, ModelConfig((32, 32), activation="relu", init="he"), TrainConfig(epochs=50, lr=1e6), events.append)
    assert result.stop_reason == "diverged"
    assert result.num_steps < 50 * 20
    assert not math.isfinite(result.train_loss[-1]) and np.all(np.isfinite(result.train_loss[:-1]))
    assert isinstance(events[-1], RunEnd)


def test_no_shuffle_keeps_file_order(small_data):
    a = fit(small_data, ModelConfig((8,)), TrainConfig(epochs=2, shuffle=False, seed=1))
    b = fit(small_data, ModelConfig((8,)), TrainConfig(epochs=2, shuffle=False, seed=1))
    np.testing.assert_array_equal(a.train_loss, b.train_loss)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"lr": 0}, "lr must be a finite number > 0, got 0"),
        ({"lr": -0.1}, "lr must be a finite number > 0"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1.0"),
        ({"momentum": -0.5}, r"momentum must be in \[0, 1\)"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"patience": 0}, "patience must be an integer >= 1"),
        ({"validations_per_epoch": 0}, "validations_per_epoch must be an integer >= 1"),
    ],
)
def test_train_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_batch_larger_than_training_set_is_rejected_before_work(small_data):
    with pytest.raises(ValueError, match="batch_size 1000 is larger than the training split \\(640 samples"):
        fit(small_data, ModelConfig((4,)), TrainConfig(batch_size=1000))


def test_history_rows(small_data):
    result = fit(small_data, ModelConfig((4,)), TrainConfig(epochs=1))
    rows = result.history_rows()
    assert len(rows) == result.num_steps
    with_val = [r for r in rows if r["val_loss"] is not None]
    assert [r["step"] for r in with_val] == result.val_steps.tolist()


def test_an_observer_stops_fit_after_a_validation_point_with_its_reason(small_data):
    """The stop contract: a non-empty str returned for a ValidationPoint ends fit right after that point, and the
    weights are those of that step (the same as a run whose last step it is); None and other values change nothing."""
    model, train = ModelConfig((8,)), TrainConfig(epochs=3, early_stopping=False)
    full = fit(small_data, model, train)
    seen = []

    def stop_at_third_point(event):
        if isinstance(event, ValidationPoint):
            seen.append(event.step)
            return "pruned" if len(seen) == 3 else None
        return "ignored for non-validation events"

    stopped = fit(small_data, model, train, on_event=stop_at_third_point)
    third = int(full.val_steps[2])
    assert stopped.stop_reason == "pruned" and seen == full.val_steps[:3].tolist()
    assert stopped.num_steps == third + 1 and stopped.val_steps.tolist() == full.val_steps[:3].tolist()
    np.testing.assert_array_equal(stopped.train_loss, full.train_loss[: third + 1])
    # no step after the stopping point touched the weights: they still give that point's validation loss
    val_loss, _ = stopped.model.evaluate(small_data.val.x, small_data.val.y)
    assert val_loss == full.val_loss[2] != full.final_val_loss
    for harmless in (None, "", 0, False):
        again = fit(small_data, model, train, on_event=lambda e, h=harmless: h)
        assert again.stop_reason == "max_epochs" and again.num_steps == full.num_steps
        np.testing.assert_array_equal(again.model.params, full.model.params)


@pytest.mark.slow
@pytest.mark.integration
def test_task2c_in_float64_from_given_weights_matches_the_naive_reference_to_1e10():
    """task2c's recipe (784-64-10 sigmoid, bias trick, plain SGD, lr 0.1, batch 32) on 16,000 MNIST samples: 500 steps
    an epoch, 4 epochs = 2,000 steps, in float64 from weights given by the caller."""
    from mlp_core import Split, load_dataset

    mnist = load_dataset("mnist", "assignment")
    data = dataclasses.replace(mnist, train=Split(mnist.train.x[:16_000], mnist.train.y[:16_000]))
    rng = np.random.default_rng(11)
    given = [rng.uniform(-1, 1, size=(785, 64)), rng.uniform(-1, 1, size=(64, 10))]
    train = TrainConfig(epochs=4, lr=0.1, momentum=0.0, seed=5, early_stopping=False, validations_per_epoch=1)
    result = fit(data, ModelConfig((64,), activation="sigmoid", bias="input_only"), train, dtype=np.float64,
                 initial=given)
    expected_losses, expected_weights = _reference_training(data, given, 0.1, 0.0, 4, 32, seed=5)
    assert result.num_steps == len(expected_losses) == 2000
    assert result.train_loss.dtype == np.float64 and result.model.params.dtype == np.float64
    np.testing.assert_allclose(result.train_loss, expected_losses, rtol=1e-10, atol=0)
    for got, want in zip(result.model.weights, expected_weights):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max())
    assert not np.array_equal(result.model.weights[1], given[1])  # it did train


def test_initial_weights_and_dtype_are_checked(small_data):
    model = ModelConfig((8,))
    with pytest.raises(ValueError, match=r"initial weights: array 0 has shape \(3, 8\)"):
        fit(small_data, model, TrainConfig(epochs=1), initial=[np.zeros((3, 8)), np.zeros((8, 10))])
    with pytest.raises(ValueError, match="dtype must be one of float32, float64, got 'float16'"):
        fit(small_data, model, TrainConfig(epochs=1), dtype="float16")
    start = MLP(small_data.input_dim, model, rng=123)
    a = fit(small_data, model, TrainConfig(epochs=1, seed=0), initial=start)
    b = fit(small_data, model, TrainConfig(epochs=1, seed=0), initial=start.parameters())
    np.testing.assert_array_equal(a.model.params, b.model.params)
    assert a.train_loss[0] != fit(small_data, model, TrainConfig(epochs=1, seed=0)).train_loss[0]


def test_epoch_order_is_the_order_fit_trains_in(small_data):
    """With lr tiny the first loss of each epoch is that of its first batch: the first rows of epoch_order."""
    from mlp_core import epoch_order

    model = ModelConfig((8,))
    result = fit(small_data, model, TrainConfig(epochs=2, seed=4, lr=1e-12), dtype=np.float64)
    _, shuffle_rng = make_generators(4)
    net = MLP(small_data.input_dim, model, rng=make_generators(4)[0], dtype=np.float64)
    for epoch in range(2):
        rows = epoch_order(shuffle_rng, len(small_data.train.y))[:32]
        loss, _ = net.evaluate(small_data.train.x[rows], small_data.train.y[rows])
        assert result.train_loss[epoch * result.steps_per_epoch] == pytest.approx(loss, rel=1e-9)


def test_a_diverged_run_is_diverged_even_when_the_observer_asks_to_stop():
    """fit and fit_population agree: a non-finite validation loss is "diverged", whatever the observer returns."""
    data = synthetic_dataset(n_train=640, n_val=50)
    model = ModelConfig((32, 32), activation="relu", init="he")
    train = TrainConfig(epochs=20, lr=1e3, validations_per_epoch=20)  # the validation loss is NaN before any step's
    asked = []

    def prune_a_non_finite_point(event):
        if isinstance(event, ValidationPoint) and not math.isfinite(event.val_loss):
            asked.append(event.step)
            return "pruned"
        return None

    plain = fit(data, model, train)
    result = fit(data, model, train, on_event=prune_a_non_finite_point)
    assert asked == [plain.num_steps - 1] and np.isfinite(plain.train_loss).all()
    assert result.stop_reason == plain.stop_reason == "diverged" and result.num_steps == plain.num_steps


@pytest.mark.parametrize("hidden_sizes, batch_size", [((1024, 1024), 32), ((4096,), 256)])
def test_training_memory_is_what_fit_allocates(hidden_sizes, batch_size):
    """The estimate the config check refuses huge models by, against the peak NumPy allocation that tracemalloc
    measures in fit (restore_best on: five parameter-sized buffers), where the model's buffers dominate."""
    import tracemalloc

    from mlp_core import training_memory

    data = synthetic_dataset(n_train=640, n_val=200, dim=20)
    model = ModelConfig(hidden_sizes)
    tracemalloc.start()
    try:
        fit(data, model, TrainConfig(epochs=1, batch_size=batch_size, restore_best=True))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = training_memory(20, model, 10, batch_size, 640)
    assert 0.95 * peak <= estimate <= 1.05 * peak
