"""Float64 central-difference gradient check (SPEC): eps = 1e-3 on every weight (the bias row included), on the first
100 training images, with weights freshly drawn from uniform[-1, 1]; the course accepts |numeric - analytic| <= eps².

Every numeric derivative is (L(w + eps) - L(w - eps)) / (2 eps) of the full batch loss. Perturbing one weight of layer
l changes only one column of that layer's pre-activation, so the forward pass restarts from layer l with that column
shifted (an exact rewrite of the same loss); this makes the check over all ~51k weights of a 784-64-10 net take
seconds rather than minutes.

    mlp-gradcheck --hidden-sizes 64 --activation sigmoid --bias input_only      (or python -m mlp_core.gradcheck)
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

import numpy as np

from .losses import cross_entropy
from .model import MLP, ModelConfig


@dataclass(frozen=True)
class LayerCheck:
    layer: int
    name: str  # "W0", "b0", ...
    count: int
    max_abs_error: float
    max_rel_error: float
    kinks: int = 0  # entries excluded because the +/- eps perturbation crossed a ReLU kink


@dataclass(frozen=True)
class GradCheckReport:
    epsilon: float
    tolerance: float
    layers: tuple[LayerCheck, ...]

    @property
    def max_abs_error(self) -> float:
        return max(layer.max_abs_error for layer in self.layers)

    @property
    def passed(self) -> bool:
        return self.max_abs_error <= self.tolerance

    def format(self) -> str:
        lines = [f"{'param':<6} {'count':>8} {'max |num-ana|':>15} {'max rel':>12} {'kinks':>6}"]
        for layer in self.layers:
            lines.append(
                f"{layer.name:<6} {layer.count:>8} {layer.max_abs_error:>15.3e} {layer.max_rel_error:>12.3e}"
                f" {layer.kinks:>6}"
            )
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"{verdict}: max abs error {self.max_abs_error:.3e} (tolerance eps^2 = {self.tolerance:.1e})")
        return "\n".join(lines)


def _forward_from(model: MLP, layer: int, pre: np.ndarray, patterns: list | None = None) -> np.ndarray:
    """Logits when layer `layer`'s pre-activation is `pre`: (N, n_out) -> (N, num_classes).

    With `patterns` given, the sign pattern (pre-activation > 0) of every hidden layer passed is appended to it."""
    last = model.num_layers - 1
    h = pre
    for index in range(layer, model.num_layers):
        if index > layer:
            w, b = model._lin[index]
            h = h @ w
            if b is not None:
                h = h + b
        if index != last:
            if patterns is not None:
                patterns.append(h > 0)
            h = model.activation.f(h)
    return h


def _same_patterns(a: list, b: list) -> bool:
    return all(np.array_equal(p, q) for p, q in zip(a, b))


def gradient_check(
    x: np.ndarray,
    y: np.ndarray,
    config: ModelConfig,
    num_classes: int = 10,
    epsilon: float = 1e-3,
    seed: int = 0,
) -> GradCheckReport:
    """Compare the analytic gradient with central differences on every parameter, in float64.

    All parameters (biases included) are redrawn from uniform[-1, 1], as in the course."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    model = MLP(x.shape[1], config, num_classes, rng=seed, dtype=np.float64)
    model.params[...] = np.random.default_rng(seed).uniform(-1.0, 1.0, size=model.params.shape)
    analytic = model.gradients(x, y)

    # Pre-activations and inputs of every layer at the unperturbed weights.
    inputs, pres = [], []
    a = x
    for index, (w, b) in enumerate(model._lin):
        inputs.append(a)
        pre = a @ w + (b if b is not None else 0.0)
        pres.append(pre)
        a = model.activation.f(pre) if index != model.num_layers - 1 else pre

    # ReLU is not differentiable at 0: an entry whose +/- eps perturbation flips a unit's sign has no meaningful
    # central difference, so it is excluded from the comparison and counted instead.
    piecewise = config.activation == "relu"
    numeric = np.empty_like(model.params)
    valid = np.ones(model.params.shape, dtype=bool)
    layers = []
    offset = 0
    trick = config.bias == "input_only"
    for index, (w_full, b_vec) in enumerate(zip(model.weights, model.biases)):
        layer_input, pre = inputs[index], pres[index]
        if trick and index == 0:
            layer_input = np.hstack([layer_input, np.ones((layer_input.shape[0], 1))])
        blocks = [("W", w_full.shape, layer_input)]
        if b_vec is not None:
            blocks.append(("b", (1, b_vec.size), np.ones((layer_input.shape[0], 1))))
        for kind, (rows, cols), source in blocks:
            count = rows * cols
            grad_block = np.empty((rows, cols))
            ok_block = np.ones((rows, cols), dtype=bool)
            for j in range(cols):
                shifted = pre.copy()
                base = pre[:, j].copy()
                for i in range(rows):
                    column = source[:, i] * epsilon
                    plus_patterns = [] if piecewise else None
                    minus_patterns = [] if piecewise else None
                    shifted[:, j] = base + column
                    plus = cross_entropy(_forward_from(model, index, shifted, plus_patterns), y)
                    shifted[:, j] = base - column
                    minus = cross_entropy(_forward_from(model, index, shifted, minus_patterns), y)
                    grad_block[i, j] = (plus - minus) / (2 * epsilon)
                    if piecewise:
                        ok_block[i, j] = _same_patterns(plus_patterns, minus_patterns)
            numeric[offset : offset + count] = grad_block.ravel()
            valid[offset : offset + count] = ok_block.ravel()
            ok = ok_block.ravel()
            ana = analytic[offset : offset + count][ok]
            num = grad_block.ravel()[ok]
            diff = np.abs(num - ana)
            rel = diff / np.maximum(np.abs(ana) + np.abs(num), 1e-12)
            layers.append(
                LayerCheck(
                    index,
                    f"{kind}{index}",
                    count,
                    float(diff.max(initial=0.0)),
                    float(rel.max(initial=0.0)),
                    int(count - ok.sum()),
                )
            )
            offset += count
    return GradCheckReport(epsilon, epsilon**2, tuple(layers))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlp-gradcheck",
        description="Float64 central-difference gradient check of the MLP on the first N training images.",
    )
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "digits"))
    parser.add_argument("--hidden-sizes", default="64", help="comma-separated, e.g. 64 or 60,60")
    parser.add_argument("--activation", default="sigmoid")
    parser.add_argument("--bias", default="input_only")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--epsilon", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .data import load_dataset

    try:
        sizes = tuple(int(s) for s in args.hidden_sizes.split(",") if s.strip())
        config = ModelConfig(sizes, activation=args.activation, bias=args.bias)
        if args.samples < 1:
            raise ValueError(f"--samples must be >= 1, got {args.samples}")
        dataset = load_dataset(args.dataset, root=args.data_root)
    except ValueError as err:
        parser.error(str(err))
    x, y = dataset.train.x[: args.samples], dataset.train.y[: args.samples]
    report = gradient_check(x, y, config, dataset.num_classes, args.epsilon, args.seed)
    sys.stdout.write(report.format() + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
