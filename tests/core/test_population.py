"""fit_population against fit: every member matches its solo run; members never affect one another."""

import dataclasses

import numpy as np
import pytest

from mlp_core import (
    ACTIVATIONS,
    MLP,
    BIAS_CONVENTIONS,
    Member,
    ModelConfig,
    RunEnd,
    TrainConfig,
    TrainLosses,
    ValidationPoint,
    fit,
    fit_population,
)

from .conftest import synthetic_dataset

SETTINGS = [(0.1, 0.0, 0), (0.02, 0.9, 1), (0.05, 0.5, 2), (0.2, 0.0, 3)]  # (lr, momentum, seed)


def assert_matches_solo(member_result, solo):
    """Losses within 1e-5 relative, weights within 1e-5 of their scale, identical validation schedule and stop."""
    assert member_result.num_steps == solo.num_steps and member_result.epochs == solo.epochs
    assert member_result.stop_reason == solo.stop_reason
    np.testing.assert_allclose(member_result.train_loss, solo.train_loss, rtol=1e-5)
    np.testing.assert_array_equal(member_result.val_steps, solo.val_steps)
    np.testing.assert_allclose(member_result.val_loss, solo.val_loss, rtol=1e-5)
    np.testing.assert_allclose(member_result.val_accuracy, solo.val_accuracy, atol=1e-12)
    np.testing.assert_allclose(member_result.train_accuracy, solo.train_accuracy, atol=1e-12)
    scale = np.abs(solo.model.params).max()
    assert np.abs(member_result.model.params - solo.model.params).max() <= 1e-5 * scale
    assert member_result.best_val_loss_step == solo.best_val_loss_step
    assert member_result.num_parameters == solo.num_parameters
    assert member_result.model.params.dtype == solo.model.params.dtype


@pytest.mark.parametrize("bias", BIAS_CONVENTIONS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_member_matches_its_solo_fit_over_one_epoch(small_data, activation, bias):
    model = ModelConfig((16, 8), activation=activation, bias=bias, init="fan_in")
    trains = [TrainConfig(epochs=1, lr=lr, momentum=m, seed=s, validations_per_epoch=4) for lr, m, s in SETTINGS]
    results = fit_population(small_data, [Member(model, t) for t in trains])
    assert len(results) == 4
    for train, result in zip(trains, results):
        assert_matches_solo(result, fit(small_data, model, train))
    assert not np.array_equal(results[0].model.params, results[1].model.params)


def test_scripted_early_stopping_matches_fit():
    """Members with their own patience, epochs, early stopping on/off and restore_best stop where fit stops."""
    data = synthetic_dataset(n_train=320, n_val=60, dim=12, seed=4)
    model = ModelConfig((24,), activation="relu", init="he", bias="per_layer")
    trains = [
        TrainConfig(epochs=30, lr=0.5, momentum=0.9, patience=2, validations_per_epoch=4, seed=1),
        TrainConfig(epochs=30, lr=0.3, momentum=0.5, patience=5, validations_per_epoch=4, seed=2, restore_best=True),
        TrainConfig(epochs=7, lr=0.5, momentum=0.9, early_stopping=False, validations_per_epoch=4, seed=3),
        TrainConfig(epochs=12, lr=0.05, patience=3, validations_per_epoch=4, seed=4, shuffle=False),
    ]
    results = fit_population(data, [Member(model, t) for t in trains])
    solos = [fit(data, model, t) for t in trains]
    for result, solo in zip(results, solos):
        assert_matches_solo(result, solo)
    reasons = [r.stop_reason for r in results]
    assert reasons[0] == "early_stopping" and reasons[2] == "max_epochs" and results[2].epochs == 7
    assert len({r.num_steps for r in results}) == 4  # four different stop steps: the scenario is not degenerate
    # restore_best: the returned weights are those of the best validation point
    restored = results[1].model.evaluate(data.val.x, data.val.y)[0]
    assert restored == pytest.approx(results[1].best_val_loss, rel=1e-6)


def test_a_stop_requested_by_the_observer_freezes_that_member_at_once(small_data):
    model = ModelConfig((16,), activation="tanh")
    trains = [TrainConfig(epochs=3, lr=0.1, seed=s, validations_per_epoch=4) for s in range(3)]
    events = []

    def observer(member, event):
        events.append((member, event))
        if member == 1 and isinstance(event, ValidationPoint) and event.step == 15:
            return "pruned"
        return None

    results = fit_population(small_data, [Member(model, t) for t in trains], on_event=observer)
    pruned = results[1]
    assert pruned.stop_reason == "pruned" and pruned.num_steps == 16 and pruned.val_steps[-1] == 15
    # frozen at that validation point: its weights give exactly the validation loss reported there
    assert pruned.model.evaluate(small_data.val.x, small_data.val.y)[0] == pytest.approx(pruned.final_val_loss, rel=1e-6)
    solo = fit(small_data, model, trains[1])
    np.testing.assert_allclose(pruned.train_loss, solo.train_loss[:16], rtol=1e-5)
    assert [r.stop_reason for r in results] == ["max_epochs", "pruned", "max_epochs"]
    # events: each member's own, in step order, ending with its RunEnd; losses delivered once each
    for k, result in enumerate(results):
        mine = [e for m, e in events if m == k]
        assert isinstance(mine[-1], RunEnd) and mine[-1].result is result
        losses = np.concatenate([e.losses for e in mine if isinstance(e, TrainLosses)])
        np.testing.assert_array_equal(losses, result.train_loss)
        assert [e.step for e in mine if isinstance(e, ValidationPoint)] == result.val_steps.tolist()
    # the pruned member's RunEnd comes at once, while the others still train
    ended = next(i for i, (m, e) in enumerate(events) if m == 1 and isinstance(e, RunEnd))
    assert any(isinstance(e, ValidationPoint) for _, e in events[ended + 1 :])


def test_a_diverging_member_leaves_the_others_bit_identical(small_data):
    model = ModelConfig((16, 8), activation="relu", init="he")
    calm = [TrainConfig(epochs=2, lr=lr, momentum=m, seed=s, validations_per_epoch=4) for lr, m, s in SETTINGS[:3]]
    wild = TrainConfig(epochs=2, lr=1e10, momentum=0.9, seed=9, validations_per_epoch=4)
    alone = fit_population(small_data, [Member(model, t) for t in calm])
    mixed = fit_population(small_data, [Member(model, t) for t in [calm[0], wild, calm[1], calm[2]]])
    diverged = mixed[1]
    assert diverged.stop_reason == "diverged" and 1 < diverged.num_steps < alone[0].num_steps
    assert not np.isfinite(diverged.train_loss[-1]) and np.isfinite(diverged.train_loss[:-1]).all()
    solo = fit(small_data, model, wild)
    assert (solo.stop_reason, solo.num_steps) == (diverged.stop_reason, diverged.num_steps)
    for a, b in zip(alone, [mixed[0], mixed[2], mixed[3]]):
        np.testing.assert_array_equal(a.model.params, b.model.params)
        np.testing.assert_array_equal(a.train_loss, b.train_loss)
        np.testing.assert_array_equal(a.val_loss, b.val_loss)
        np.testing.assert_array_equal(a.train_accuracy, b.train_accuracy)


@pytest.mark.parametrize("bias", BIAS_CONVENTIONS)
def test_members_sharing_their_shuffle_order_get_the_bits_of_a_population_that_gathers_per_member(small_data, bias):
    """Same-seed members share one batch gather (broadcast by the matmuls); a member's bits are those it gets next to
    a member of another seed, where each member's batch is gathered on its own, and its solo fit's weights."""
    model = ModelConfig((16, 8), activation="tanh", init="fan_in", bias=bias)
    member = TrainConfig(epochs=2, lr=0.05, momentum=0.9, seed=3, validations_per_epoch=4)
    same_seed = TrainConfig(epochs=1, lr=0.2, momentum=0.0, seed=3, validations_per_epoch=4)
    other_seed = TrainConfig(epochs=2, lr=0.2, momentum=0.0, seed=4, validations_per_epoch=4)
    shared = fit_population(small_data, [Member(model, member), Member(model, same_seed)])[0]
    gathered = fit_population(small_data, [Member(model, other_seed), Member(model, member)])[1]
    np.testing.assert_array_equal(shared.model.params, gathered.model.params)
    np.testing.assert_array_equal(shared.train_loss, gathered.train_loss)
    np.testing.assert_array_equal(shared.val_loss, gathered.val_loss)
    np.testing.assert_array_equal(shared.train_accuracy, gathered.train_accuracy)
    solo = fit(small_data, model, member)
    np.testing.assert_allclose(shared.train_loss, solo.train_loss, rtol=1e-5)
    np.testing.assert_allclose(shared.model.params, solo.model.params, atol=1e-5 * np.abs(solo.model.params).max())


def test_a_rerun_is_bit_identical(small_data):
    members = [Member(ModelConfig((8,)), TrainConfig(epochs=2, lr=lr, momentum=m, seed=s)) for lr, m, s in SETTINGS]
    a, b = fit_population(small_data, members), fit_population(small_data, members)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.model.params, y.model.params)
        np.testing.assert_array_equal(x.val_loss, y.val_loss)


@pytest.mark.parametrize(
    "other, message",
    [
        (Member(ModelConfig((9,)), TrainConfig()), r"members\[1\] has hidden_sizes=\(9,\) but members\[0\] has \(8,\)"),
        (Member(ModelConfig((8,), bias="per_layer"), TrainConfig()), r"members\[1\] has bias='per_layer'"),
        (Member(ModelConfig((8,)), TrainConfig(batch_size=16)), r"members\[1\] has batch_size=16"),
    ],
)
def test_members_that_cannot_share_a_pass_are_refused_before_any_work(small_data, other, message):
    with pytest.raises(ValueError, match=message):
        fit_population(small_data, [Member(ModelConfig((8,)), TrainConfig()), other])


def test_an_empty_population_is_refused(small_data):
    with pytest.raises(ValueError, match="members must be a non-empty list"):
        fit_population(small_data, [])


def test_members_take_initial_weights_and_float64_like_fit(small_data):
    from mlp_core import MLP

    model = ModelConfig((8,), activation="sigmoid")
    start = MLP(small_data.input_dim, model, rng=77)
    train = TrainConfig(epochs=2, lr=0.1, momentum=0.9, seed=2)
    solo = fit(small_data, model, train, dtype=np.float64, initial=start)
    fused = fit_population(
        small_data, [Member(model, train, start), Member(model, TrainConfig(epochs=2, seed=3))], dtype=np.float64
    )
    assert fused[0].model.params.dtype == np.float64 and fused[0].train_loss.dtype == np.float64
    np.testing.assert_allclose(fused[0].train_loss, solo.train_loss, rtol=1e-12)
    np.testing.assert_allclose(fused[0].model.params, solo.model.params, rtol=0, atol=1e-12)


def _stop_at_point(index, reason="pruned"):
    """A solo observer that stops the run at its validation point number `index` (0-based)."""
    seen = []

    def observer(event):
        if isinstance(event, ValidationPoint):
            seen.append(event.step)
            return reason if len(seen) == index + 1 else None
        return None

    return observer


ENGINES = {
    "fit": lambda data, model, train, observer: fit(data, model, train, on_event=observer),
    "fit_population": lambda data, model, train, observer: fit_population(
        data, [Member(model, train), Member(model, dataclasses.replace(train, seed=train.seed + 1))],
        on_event=lambda member, event: observer(event) if member == 0 else None,
    )[0],
}


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("stop_point", [0, 2])
def test_restore_best_when_an_observer_stops_the_run_gives_the_best_points_weights(small_data, engine, stop_point):
    """The observer's stopping point is a best-weights candidate like any other: with restore_best the model is that
    of the best validation point up to the stop, finite (the snapshot exists from the first point on), and the same in
    both engines; final_val_loss is that model's validation loss."""
    model = ModelConfig((16,), activation="tanh")
    train = TrainConfig(epochs=2, lr=0.1, seed=5, validations_per_epoch=4, restore_best=True)
    full = fit(small_data, model, dataclasses.replace(train, restore_best=False, early_stopping=False))
    best = int(np.argmin(full.val_loss[: stop_point + 1]))
    assert best == stop_point  # the stopping point is the best so far: the case where it must be a candidate
    at_best = fit(small_data, model, dataclasses.replace(train, restore_best=False), _stop_at_point(best))

    result = ENGINES[engine](small_data, model, train, _stop_at_point(stop_point))
    assert result.stop_reason == "pruned" and result.val_steps[-1] == full.val_steps[stop_point]
    assert np.isfinite(result.model.params).all()
    scale = np.abs(at_best.model.params).max()
    assert np.abs(result.model.params - at_best.model.params).max() <= 1e-5 * scale
    assert result.final_val_loss == result.best_val_loss
    saved_val_loss = result.model.evaluate(small_data.val.x, small_data.val.y)[0]
    assert saved_val_loss == pytest.approx(result.final_val_loss, rel=1e-6)
    if engine == "fit":
        np.testing.assert_array_equal(result.model.params, at_best.model.params)
    else:
        solo = ENGINES["fit"](small_data, model, train, _stop_at_point(stop_point))
        assert np.abs(result.model.params - solo.model.params).max() <= 1e-5 * scale



@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_final_validation_metrics_are_those_of_the_returned_model(small_data, engine, monkeypatch):
    """20 steps an epoch, a validation point every 6: the last step (19) is not one, so the final model is evaluated
    once more at the end; when the last step is a validation point, its value is reused without another pass."""
    model = ModelConfig((16,), activation="tanh")
    train = TrainConfig(epochs=1, lr=0.1, seed=5, validations_per_epoch=3)
    result = ENGINES[engine](small_data, model, train, lambda event: None)
    assert result.val_steps.tolist() == [0, 6, 12, 18] and result.num_steps == 20
    final_loss, final_accuracy = result.model.evaluate(small_data.val.x, small_data.val.y)
    assert (result.final_val_loss, result.final_val_accuracy) == (final_loss, final_accuracy)
    assert result.final_val_loss != result.val_loss[-1]

    calls = []
    real = MLP.evaluate
    monkeypatch.setattr(MLP, "evaluate", lambda self, *args, **kw: calls.append(1) or real(self, *args, **kw))
    every_step_train = dataclasses.replace(train, validations_per_epoch=20)
    every_step = ENGINES[engine](small_data, model, every_step_train, lambda event: None)
    assert every_step.val_steps[-1] == every_step.num_steps - 1
    assert every_step.final_val_loss == every_step.val_loss[-1]
    assert len(calls) == (len(every_step.val_steps) if engine == "fit" else 0)  # fit_population: evaluate_stack
