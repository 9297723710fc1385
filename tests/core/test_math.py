"""Closed forms and hand-computed values for activations, loss, init and the optimizer."""

import math

import numpy as np
import pytest

from mlp_core.activations import ACTIVATIONS, get_activation
from mlp_core.init import draw_weights
from mlp_core.losses import FusedSoftmaxCE, cross_entropy, cross_entropy_grad, softmax
from mlp_core.optim import SGD


def test_softmax_rows_sum_to_one_even_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [3.0, 3.0, 3.0], [-5.0, 2.0, 0.5]])
    p = softmax(logits)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p[1], 1 / 3)


def test_cross_entropy_of_equal_logits_is_ln10():
    logits = np.full((7, 10), 2.5)
    labels = np.arange(7) % 10
    assert cross_entropy(logits, labels) == pytest.approx(math.log(10), abs=1e-12)


def test_cross_entropy_is_batch_mean_of_per_sample_sum():
    logits = np.array([[2.0, 0.0], [0.0, 0.0]])
    labels = np.array([0, 1])
    per_sample = [-math.log(math.exp(2) / (math.exp(2) + 1)), math.log(2)]
    assert cross_entropy(logits, labels) == pytest.approx(sum(per_sample) / 2, abs=1e-14)


def test_cross_entropy_stable_with_relu_sized_logits():
    logits = np.array([[900.0, 0.0], [0.0, 900.0]])
    assert cross_entropy(logits, np.array([1, 1])) == pytest.approx(450.0)


def test_fused_loss_and_gradient_match_reference_in_float32():
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(32, 10)) * 5).astype(np.float32)
    labels = rng.integers(0, 10, 32)
    onehot = np.zeros((32, 10), np.float32)
    onehot[np.arange(32), labels] = 1
    expected_loss = cross_entropy(logits.astype(np.float64), labels)
    expected_grad = cross_entropy_grad(logits.astype(np.float64), labels)
    buf = logits.copy()
    loss = FusedSoftmaxCE(32, 10)(buf, onehot)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert buf.dtype == np.float32
    np.testing.assert_allclose(buf, expected_grad, atol=1e-7)


def test_gradient_of_cross_entropy_matches_finite_differences():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(5, 4))
    labels = rng.integers(0, 4, 5)
    grad = cross_entropy_grad(logits, labels)
    eps = 1e-6
    for i in range(5):
        for j in range(4):
            up, down = logits.copy(), logits.copy()
            up[i, j] += eps
            down[i, j] -= eps
            numeric = (cross_entropy(up, labels) - cross_entropy(down, labels)) / (2 * eps)
            assert numeric == pytest.approx(grad[i, j], abs=1e-9)


def test_improved_sigmoid_values():
    act = get_activation("improved_sigmoid")
    z = np.array([0.0, 1.0, -2.0])
    np.testing.assert_allclose(act.f(z), 1.7159 * np.tanh(2 * z / 3))
    a = act.f(z)
    np.testing.assert_allclose(act.df_from_output(a), 1.7159 * (2 / 3) * (1 - np.tanh(2 * z / 3) ** 2))
    assert act.f(np.array([1.0]))[0] == pytest.approx(1.7159 * math.tanh(2 / 3))


def test_sigmoid_is_the_logistic_function():
    z = np.linspace(-30, 30, 61)
    # the tanh form differs from 1/(1+e^-z) only by rounding (absolute, ~1e-16) in the saturated tails
    np.testing.assert_allclose(get_activation("sigmoid").f(z), 1 / (1 + np.exp(-z)), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_inplace_kernels_match_reference_forms(name):
    act = get_activation(name)
    rng = np.random.default_rng(5)
    z = rng.normal(size=(8, 6)).astype(np.float32) * 3
    h = z.copy()
    act.forward_(h)
    np.testing.assert_allclose(h, act.f(z.astype(np.float64)), rtol=2e-6, atol=2e-6)
    assert h.dtype == np.float32
    delta = rng.normal(size=z.shape).astype(np.float32)
    expected = delta * act.df_from_output(h.astype(np.float64))
    act.backward_(delta, h, np.empty_like(h))
    np.testing.assert_allclose(delta, expected, rtol=1e-5, atol=1e-6)
    # the derivative from the output equals the numeric derivative of f
    eps = 1e-6
    zz = z.astype(np.float64)
    mask = np.abs(zz) > 1e-3  # away from the ReLU kink
    numeric = (act.f(zz + eps) - act.f(zz - eps)) / (2 * eps)
    np.testing.assert_allclose(act.df_from_output(act.f(zz))[mask], numeric[mask], atol=1e-7)


def test_unknown_activation_names_valid_choices():
    with pytest.raises(ValueError, match="unknown activation 'swish'.*sigmoid, improved_sigmoid, relu, tanh"):
        get_activation("swish")


def test_init_statistics():
    rng = np.random.default_rng(0)
    w = draw_weights("uniform", (785, 64), 785, 64, rng)
    assert w.min() >= -1 and w.max() <= 1 and w.std() == pytest.approx(1 / math.sqrt(3), rel=0.02)
    w = draw_weights("fan_in", (785, 64), 785, 64, rng)
    assert w.mean() == pytest.approx(0, abs=0.003) and w.std() == pytest.approx(1 / math.sqrt(785), rel=0.02)
    w = draw_weights("he", (64, 64), 64, 64, rng)
    assert w.std() == pytest.approx(math.sqrt(2 / 64), rel=0.05)
    w = draw_weights("xavier", (64, 10), 64, 10, rng)
    bound = math.sqrt(6 / 74)
    assert np.abs(w).max() <= bound and w.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    with pytest.raises(ValueError, match="unknown init 'glorot'.*uniform, fan_in, he, xavier"):
        draw_weights("glorot", (2, 2), 2, 2, rng)


def test_momentum_steps_match_hand_computed_values():
    # v <- g + 0.9 v ; w <- w - 0.5 v, starting from v = 0
    w = np.array([1.0, -2.0], dtype=np.float32)
    opt = SGD(lr=0.5, momentum=0.9)
    opt.init(w)
    g1, g2, g3 = np.array([1.0, 0.0], np.float32), np.array([2.0, -1.0], np.float32), np.array([0.0, 4.0], np.float32)
    opt.step(w, g1)  # v = [1, 0];          w = [0.5, -2]
    np.testing.assert_allclose(w, [0.5, -2.0])
    opt.step(w, g2)  # v = [2.9, -1];       w = [-0.95, -1.5]
    np.testing.assert_allclose(w, [-0.95, -1.5], rtol=1e-6)
    opt.step(w, g3)  # v = [2.61, 3.1];     w = [-2.255, -3.05]
    np.testing.assert_allclose(opt.velocity, [2.61, 3.1], rtol=1e-6)
    np.testing.assert_allclose(w, [-2.255, -3.05], rtol=1e-6)
    assert w.dtype == np.float32 and opt.velocity.dtype == np.float32


def test_plain_sgd_step():
    w = np.array([1.0, 1.0], dtype=np.float32)
    opt = SGD(lr=0.1)
    opt.init(w)
    opt.step(w, np.array([1.0, -3.0], np.float32))
    opt.step(w, np.array([1.0, -3.0], np.float32))
    np.testing.assert_allclose(w, [0.8, 1.6], rtol=1e-6)


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), "0.1", True])
def test_sgd_rejects_bad_learning_rates(lr):
    with pytest.raises(ValueError, match="learning rate"):
        SGD(lr)


@pytest.mark.parametrize("momentum", [1.0, -0.1, 1.5])
def test_sgd_rejects_bad_momentum(momentum):
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        SGD(0.1, momentum)
