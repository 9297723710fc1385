"""The multilayer perceptron: architecture config, parameters in one flat buffer, forward and backward kernels.

Bias conventions
- ``per_layer``: every layer l has weights W_l: (n_in, n_out) and a bias b_l: (n_out,).
- ``input_only``: the course's "bias trick". The input gets a constant-1 column (784 -> 785 inputs) and no later layer
  has a bias. We store the first layer as W_0: (n_in + 1, n_out) whose last row multiplies the constant 1, and compute
  x @ W_0[:-1] + W_0[-1], which is exactly [x, 1] @ W_0 without building the augmented input.

All parameters (and all gradients) are views into one flat buffer, so the optimizer updates them in a handful of calls.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .activations import ACTIVATIONS, get_activation
from .init import INITS, check_init, draw_weights

BIAS_CONVENTIONS = ("per_layer", "input_only")
_FORMAT_VERSION = 1


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an MLP. `hidden_sizes` e.g. (64,) or (60, 60); the output layer is the softmax over classes."""

    hidden_sizes: tuple[int, ...] = (64,)
    activation: str = "sigmoid"
    init: str = "uniform"
    bias: str = "input_only"

    def __post_init__(self):
        sizes = self.hidden_sizes
        if isinstance(sizes, (list, np.ndarray)):
            object.__setattr__(self, "hidden_sizes", tuple(sizes))
        self.validate()
        object.__setattr__(self, "hidden_sizes", tuple(int(s) for s in self.hidden_sizes))

    def validate(self) -> None:
        sizes = self.hidden_sizes
        if not isinstance(sizes, tuple) or len(sizes) == 0:
            raise ValueError(f"hidden_sizes must be a non-empty list of positive integers, got {sizes!r}")
        for s in sizes:
            if not _is_int(s) or s < 1:
                raise ValueError(f"hidden_sizes must hold integers >= 1, got {s!r} in {list(sizes)!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid choices: {', '.join(ACTIVATIONS)}")
        check_init(self.init)
        if self.bias not in BIAS_CONVENTIONS:
            raise ValueError(f"unknown bias convention {self.bias!r}; valid choices: {', '.join(BIAS_CONVENTIONS)}")


def num_parameters(input_dim: int, model: ModelConfig, num_classes: int = 10) -> int:
    """Exact parameter count, in closed form.

    per_layer:  sum_l (n_l + 1) n_{l+1}
    input_only: (n_0 + 1) n_1 + sum_{l>=1} n_l n_{l+1}
    """
    sizes = [input_dim, *model.hidden_sizes, num_classes]
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    if model.bias == "per_layer":
        return weights + sum(sizes[1:])
    return weights + sizes[1]


@dataclass
class _Workspace:
    """Preallocated activations and deltas for a batch of at most `rows` samples."""

    rows: int
    acts: list = field(default_factory=list)  # per layer (rows, n_out); the last holds the logits
    deltas: list = field(default_factory=list)  # per hidden layer (rows, n_out)
    scratch: list = field(default_factory=list)  # per hidden layer (rows, n_out)


class MLP:
    """A fully connected network input_dim -> hidden_sizes -> num_classes with a softmax output.

    `weights[l]`: (n_in, n_out), or (n_in + 1, n_out) for the first layer under the bias trick.
    `biases[l]`: (n_out,) under `per_layer`, None under `input_only`.
    """

    def __init__(
        self,
        input_dim: int,
        config: ModelConfig,
        num_classes: int = 10,
        rng: np.random.Generator | int | None = None,
        dtype=np.float32,
    ):
        if not _is_int(input_dim) or input_dim < 1:
            raise ValueError(f"input_dim must be an integer >= 1, got {input_dim!r}")
        if not _is_int(num_classes) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.config = config
        self.input_dim = int(input_dim)
        self.num_classes = int(num_classes)
        self.dtype = np.dtype(dtype)
        self.activation = get_activation(config.activation)
        self.sizes = [self.input_dim, *config.hidden_sizes, self.num_classes]
        self.num_parameters = num_parameters(self.input_dim, config, self.num_classes)

        self.params = np.zeros(self.num_parameters, dtype=self.dtype)
        self.grads = np.zeros(self.num_parameters, dtype=self.dtype)
        self.weights, self.biases, self._lin = self._carve(self.params)
        _, _, self._glin = self._carve(self.grads)
        self._workspaces: dict[int, _Workspace] = {}
        self.initialize(rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng))

    @property
    def num_layers(self) -> int:
        return len(self.sizes) - 1

    def _carve(self, flat: np.ndarray):
        """Split a flat buffer into per-layer views: (weights, biases, [(W used in matmul, bias vector or None)])."""
        weights, biases, lin = [], [], []
        offset = 0
        trick = self.config.bias == "input_only"
        for layer, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            rows = n_in + 1 if (trick and layer == 0) else n_in
            w = flat[offset : offset + rows * n_out].reshape(rows, n_out)
            offset += rows * n_out
            if trick:
                b = None
                lin.append((w[:-1], w[-1]) if layer == 0 else (w, None))
            else:
                b = flat[offset : offset + n_out]
                offset += n_out
                lin.append((w, b))
            weights.append(w)
            biases.append(b)
        assert offset == flat.size
        return weights, biases, lin

    def initialize(self, rng: np.random.Generator) -> None:
        """Draw all weights with the configured scheme; `per_layer` biases start at 0.

        fan_in counts the constant-1 input of the bias trick, so the first layer's fan_in is input_dim + 1 there."""
        for w, b in zip(self.weights, self.biases):
            fan_in, fan_out = w.shape
            w[...] = draw_weights(self.config.init, w.shape, fan_in, fan_out, rng)
            if b is not None:
                b[...] = 0.0

    # ---------------------------------------------------------------- kernels
    def _workspace(self, rows: int) -> _Workspace:
        ws = self._workspaces.get(rows)
        if ws is None:
            ws = _Workspace(rows)
            for n_out in self.sizes[1:]:
                ws.acts.append(np.empty((rows, n_out), dtype=self.dtype))
            for n_out in self.sizes[1:-1]:
                ws.deltas.append(np.empty((rows, n_out), dtype=self.dtype))
                ws.scratch.append(np.empty((rows, n_out), dtype=self.dtype))
            self._workspaces[rows] = ws
        return ws

    def _forward(self, x: np.ndarray, ws: _Workspace) -> np.ndarray:
        """Forward x: (n, input_dim) into the workspace; returns the logits view (n, num_classes)."""
        n = x.shape[0]
        a = x
        last = self.num_layers - 1
        for layer, (w, b) in enumerate(self._lin):
            h = ws.acts[layer] if n == ws.rows else ws.acts[layer][:n]
            np.matmul(a, w, out=h)
            if b is not None:
                h += b
            if layer != last:
                self.activation.forward_(h)
            a = h
        return a

    def _backward(self, x: np.ndarray, ws: _Workspace, dlogits: np.ndarray) -> None:
        """Fill `grads` from dL/dlogits: (n, num_classes), using the activations cached by `_forward`."""
        d = dlogits
        for layer in range(self.num_layers - 1, -1, -1):
            a_prev = x if layer == 0 else ws.acts[layer - 1]
            gw, gb = self._glin[layer]
            np.matmul(a_prev.T, d, out=gw)
            if gb is not None:
                np.sum(d, axis=0, out=gb)
            if layer:
                d_prev = ws.deltas[layer - 1]
                np.matmul(d, self._lin[layer][0].T, out=d_prev)
                self.activation.backward_(d_prev, a_prev, ws.scratch[layer - 1])
                d = d_prev

    # ---------------------------------------------------------------- public API
    def predict_logits(self, x: np.ndarray, chunk_size: int = 2048) -> np.ndarray:
        """Logits for x: (N, input_dim) -> (N, num_classes)."""
        x = self._check_input(x)
        out = np.empty((x.shape[0], self.num_classes), dtype=self.dtype)
        ws = self._workspace(min(chunk_size, max(1, x.shape[0])))
        for start in range(0, x.shape[0], ws.rows):
            stop = min(start + ws.rows, x.shape[0])
            out[start:stop] = self._forward(x[start:stop], ws)
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels (argmax of the output): (N,) int64."""
        return self.predict_logits(x).argmax(axis=1)

    def evaluate(self, x: np.ndarray, y: np.ndarray, chunk_size: int = 2048) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) over the whole set, in chunks; sums are accumulated in float64."""
        x = self._check_input(x)
        ws = self._workspace(min(chunk_size, max(1, x.shape[0])))
        total_loss = 0.0
        correct = 0
        for start in range(0, x.shape[0], ws.rows):
            stop = min(start + ws.rows, x.shape[0])
            logits = self._forward(x[start:stop], ws)
            labels = y[start:stop]
            correct += int(np.count_nonzero(logits.argmax(axis=1) == labels))
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_norm = np.log(np.exp(shifted).sum(axis=1, dtype=np.float64))
            picked = shifted[np.arange(stop - start), labels]
            total_loss += float(log_norm.sum() - picked.sum(dtype=np.float64))
        n = max(1, x.shape[0])
        return total_loss / n, correct / n

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"expected input of shape (N, {self.input_dim}), got {x.shape}")
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        return x

    def save(self, path: str | Path) -> None:
        """Write an .npz with every weight/bias array and the architecture as JSON metadata."""
        meta = {
            "format_version": _FORMAT_VERSION,
            "input_dim": self.input_dim,
            "num_classes": self.num_classes,
            "hidden_sizes": list(self.config.hidden_sizes),
            "activation": self.config.activation,
            "init": self.config.init,
            "bias": self.config.bias,
            "dtype": self.dtype.name,
        }
        arrays = {f"W{i}": w for i, w in enumerate(self.weights)}
        arrays.update({f"b{i}": b for i, b in enumerate(self.biases) if b is not None})
        with open(path, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "MLP":
        """Rebuild a model written by `save` (no pickle involved)."""
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            config = ModelConfig(
                hidden_sizes=tuple(meta["hidden_sizes"]),
                activation=meta["activation"],
                init=meta["init"],
                bias=meta["bias"],
            )
            model = cls(meta["input_dim"], config, meta["num_classes"], rng=0, dtype=np.dtype(meta["dtype"]))
            for i, w in enumerate(model.weights):
                w[...] = npz[f"W{i}"]
            for i, b in enumerate(model.biases):
                if b is not None:
                    b[...] = npz[f"b{i}"]
        return model

    def __repr__(self) -> str:
        arch = "-".join(str(s) for s in self.sizes)
        return f"MLP({arch}, activation={self.config.activation}, bias={self.config.bias}, params={self.num_parameters})"
