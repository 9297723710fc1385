"""Model structure, gradient checks, parameter counts, persistence."""

import subprocess
import sys

import numpy as np
import pytest

from mlp_core import ACTIVATIONS, BIAS_CONVENTIONS, MLP, ModelConfig, gradient_check, num_parameters

from ..handshake import HANG


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", BIAS_CONVENTIONS)
@pytest.mark.parametrize("hidden_sizes", [(9,), (9, 7, 8)])
def test_gradient_check_float64(activation, bias, hidden_sizes):
    rng = np.random.default_rng(11)
    # unit-scale inputs keep the deep ReLU logits moderate, so the O(eps²) truncation error stays below eps²
    x = rng.normal(size=(100, 16)) * 0.3
    y = rng.integers(0, 10, 100)
    report = gradient_check(x, y, ModelConfig(hidden_sizes, activation=activation, bias=bias), epsilon=1e-3)
    assert report.passed, report.format()
    # every parameter was checked (bias row / bias vectors included), except the counted ReLU kinks
    assert sum(layer.count for layer in report.layers) == num_parameters(16, ModelConfig(hidden_sizes, bias=bias))
    assert sum(layer.kinks for layer in report.layers) <= 0.15 * sum(layer.count for layer in report.layers)


def test_gradient_check_detects_a_wrong_gradient(monkeypatch):
    """The check can fail: a derivative off by 10 % is reported."""
    from mlp_core import activations

    original = activations.Sigmoid.backward_

    def wrong(self, delta, a, tmp):
        original(self, delta, a, tmp)
        delta *= 1.1

    monkeypatch.setattr(activations.Sigmoid, "backward_", wrong)
    rng = np.random.default_rng(0)
    report = gradient_check(rng.normal(size=(20, 6)), rng.integers(0, 10, 20), ModelConfig((5,)))
    assert not report.passed
    assert report.layers[0].max_abs_error > 1e-4  # the first layer sees the wrong derivative
    assert report.layers[-1].max_abs_error < 1e-6  # the output layer does not


@pytest.mark.parametrize(
    "sizes,bias,expected",
    [
        ((64,), "input_only", 785 * 64 + 64 * 10),  # 50,880: the course's task2c network
        ((64,), "per_layer", 784 * 64 + 64 + 64 * 10 + 10),  # 50,890
        ((32,), "input_only", 785 * 32 + 32 * 10),
        ((128,), "input_only", 785 * 128 + 128 * 10),
        ((60, 60), "input_only", 785 * 60 + 60 * 60 + 60 * 10),  # 51,300, close to task3c's 50,880
        ((60, 60), "per_layer", 784 * 60 + 60 + 60 * 60 + 60 + 60 * 10 + 10),
        ((64,) * 10, "input_only", 785 * 64 + 9 * 64 * 64 + 64 * 10),
        ((64,) * 10, "per_layer", 784 * 64 + 64 + 9 * (64 * 64 + 64) + 64 * 10 + 10),
    ],
)
def test_parameter_counts_closed_form_and_allocation(sizes, bias, expected):
    config = ModelConfig(sizes, bias=bias)
    assert num_parameters(784, config) == expected
    model = MLP(784, config, rng=0)
    allocated = sum(w.size for w in model.weights) + sum(b.size for b in model.biases if b is not None)
    assert allocated == expected == model.num_parameters == model.params.size


def test_bias_trick_equals_explicit_constant_column():
    rng = np.random.default_rng(1)
    model = MLP(12, ModelConfig((5, 4), activation="tanh", bias="input_only"), rng=0, dtype=np.float64)
    x = rng.normal(size=(7, 12))
    augmented = np.hstack([x, np.ones((7, 1))])
    h = np.tanh(augmented @ model.weights[0])
    h = np.tanh(h @ model.weights[1])
    expected = h @ model.weights[2]
    np.testing.assert_allclose(model.predict_logits(x), expected, rtol=1e-12)
    assert model.weights[0].shape == (13, 5) and model.biases == [None, None, None]


def test_fan_in_counts_the_bias_input():
    model = MLP(784, ModelConfig((64,), init="fan_in", bias="input_only"), rng=0)
    assert model.weights[0].std() == pytest.approx(1 / np.sqrt(785), rel=0.02)
    assert model.weights[1].std() == pytest.approx(1 / np.sqrt(64), rel=0.1)


def test_evaluate_matches_reference_loss_and_accuracy():
    from mlp_core import cross_entropy

    rng = np.random.default_rng(2)
    model = MLP(30, ModelConfig((16,), activation="relu", bias="per_layer", init="he"), rng=0)
    x = rng.normal(size=(5000, 30)).astype(np.float32)
    y = rng.integers(0, 10, 5000)
    loss, acc = model.evaluate(x, y, chunk_size=1024)
    logits = model.predict_logits(x).astype(np.float64)
    assert loss == pytest.approx(cross_entropy(logits, y), rel=1e-5)
    assert acc == pytest.approx(np.mean(logits.argmax(1) == y))


def _evaluate_as_before(model, x, y, chunk_size=2048):
    """MLP.evaluate as it was before row blocks and the stacked first layer (release 0.2): the reference."""
    total_loss, correct = 0.0, 0
    for start in range(0, x.shape[0], chunk_size):
        logits = model.predict_logits(x[start : start + chunk_size])
        labels = y[start : start + chunk_size]
        correct += int(np.count_nonzero(logits.argmax(axis=1) == labels))
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1, dtype=np.float64))
        total_loss += float(log_norm.sum() - shifted[np.arange(len(labels)), labels].sum(dtype=np.float64))
    return total_loss / x.shape[0], correct / x.shape[0]


@pytest.mark.parametrize("bias", BIAS_CONVENTIONS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_evaluate_equals_the_previous_evaluation_up_to_float32_rounding(activation, bias):
    rng = np.random.default_rng(3)
    model = MLP(40, ModelConfig((24, 12), activation=activation, bias=bias, init="fan_in"), rng=1)
    x = rng.normal(size=(3001, 40)).astype(np.float32)  # not a multiple of any block size
    y = rng.integers(0, 10, 3001)
    expected = _evaluate_as_before(model, x, y)
    for rows in (1, 100, 2048, 5000):
        loss, accuracy = model.evaluate(x, y, chunk_size=rows)
        assert loss == pytest.approx(expected[0], rel=1e-6) and accuracy == expected[1]


def test_evaluation_accuracy_follows_argmax_on_ties_and_nan():
    """A tie counts for the first maximal class and a NaN logit wins, as with argmax; `accuracy` equals `evaluate`'s."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    y = rng.integers(0, 10, 300)
    model = MLP(12, ModelConfig((8,), activation="relu", bias="per_layer"), rng=0)
    model.params[...] = 0.0  # every logit equal: argmax is class 0
    assert model.evaluate(x, y, chunk_size=64) == (pytest.approx(np.log(10.0)), np.mean(y == 0))
    model.params[...] = rng.normal(size=model.params.shape)
    model.weights[1][:, 3] = model.weights[1][:, 7]  # classes 3 and 7 tie on every sample
    model.biases[1][3] = model.biases[1][7] = 50.0
    expected = _evaluate_as_before(model, x, y)
    assert expected[1] == np.mean(y == 3) and model.evaluate(x, y, chunk_size=64) == pytest.approx(expected)
    model.biases[1][5] = np.nan  # a NaN logit is argmax's maximum
    loss, accuracy = model.evaluate(x, y, chunk_size=64)
    assert np.isnan(loss) and accuracy == np.mean(y == 5) == model.accuracy(x, y)


def test_stacked_evaluation_equals_each_members_own():
    from mlp_core.model import carve, evaluate_stack

    rng = np.random.default_rng(4)
    config = ModelConfig((16, 8), activation="tanh", bias="per_layer")
    models = [MLP(20, config, rng=seed) for seed in range(3)]
    for m in models:
        m.params[...] = rng.normal(size=m.params.shape)  # non-zero biases too
    x = rng.normal(size=(700, 20)).astype(np.float32)
    y = rng.integers(0, 10, 700)
    _, _, lin = carve(np.stack([m.params for m in models]), models[0].sizes, config.bias)
    losses, accuracies = evaluate_stack(lin, models[0].activation, x, y, rows=256)
    for m, loss, accuracy in zip(models, losses, accuracies):
        expected = _evaluate_as_before(m, x, y)
        assert loss == pytest.approx(expected[0], rel=1e-6) and accuracy == expected[1]


def test_save_and_load_round_trip(tmp_path):
    model = MLP(20, ModelConfig((6, 5), activation="improved_sigmoid", init="fan_in", bias="per_layer"), rng=3)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = MLP.load(path)
    assert loaded.config == model.config and loaded.num_parameters == model.num_parameters
    np.testing.assert_array_equal(loaded.params, model.params)
    x = np.random.default_rng(0).normal(size=(4, 20)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_logits(x), model.predict_logits(x))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"hidden_sizes": ()}, "non-empty"),
        ({"hidden_sizes": (64, 0)}, "integers >= 1, got 0"),
        ({"hidden_sizes": (-3,)}, "integers >= 1, got -3"),
        ({"hidden_sizes": (2.5,)}, "integers >= 1, got 2.5"),
        ({"activation": "softplus"}, "unknown activation 'softplus'; valid choices: sigmoid"),
        ({"init": "zeros"}, "unknown init 'zeros'; valid choices: uniform, fan_in, he, xavier"),
        ({"bias": "none"}, "unknown bias convention 'none'; valid choices: per_layer, input_only"),
    ],
)
def test_model_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_importing_mlp_core_loads_no_hydra_omegaconf_or_mlflow():
    code = (
        "import sys, numpy as np, mlp_core\n"
        "from mlp_core import fit, ModelConfig, TrainConfig, load_dataset, gradient_check\n"
        "import mlp_core.gradcheck, mlp_core.data, mlp_core.sources\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf', 'mlflow', 'sweeper'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_gradcheck_command_line_on_digits():
    out = subprocess.run(
        [sys.executable, "-m", "mlp_core.gradcheck", "--dataset", "digits", "--hidden-sizes", "8,6",
         "--activation", "improved_sigmoid", "--bias", "per_layer", "--samples", "100"],
        capture_output=True, text=True, timeout=HANG,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["param", "count", "max", "|num-ana|", "max", "rel", "kinks"]
    assert [line.split()[0] for line in lines[1:-1]] == ["W0", "b0", "W1", "b1", "W2", "b2"]
    assert lines[-1].startswith("PASSED: max abs error")


def test_gradcheck_command_line_rejects_bad_values():
    out = subprocess.run(
        [sys.executable, "-m", "mlp_core.gradcheck", "--dataset", "digits", "--activation", "swish"],
        capture_output=True, text=True, timeout=HANG,
    )
    assert out.returncode == 2 and "unknown activation 'swish'" in out.stderr
