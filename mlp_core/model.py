"""The multilayer perceptron: architecture config, parameters in one flat buffer, forward and backward kernels.

Bias conventions
- ``per_layer``: every layer l has weights W_l: (n_in, n_out) and a bias b_l: (n_out,).
- ``input_only``: the course's "bias trick". The input gets a constant-1 column (784 -> 785 inputs) and no later layer
  has a bias. We store the first layer as W_0: (n_in + 1, n_out) whose last row multiplies the constant 1, and compute
  x @ W_0[:-1] + W_0[-1], which is exactly [x, 1] @ W_0 without building the augmented input.

All parameters (and all gradients) are views into one flat buffer, so the optimizer updates them in a handful of calls.

Files: `save` writes an uncompressed .npz with `meta`, the architecture as a JSON string, and one .npy member per
parameter array (W0, W1, ..., plus b0, b1, ... under per_layer). `load` checks such a file against itself before it
allocates the model.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .activations import ACTIVATIONS, get_activation
from .init import check_init, draw_weights
from .model_file import _FORMAT_VERSION, _ZIP_SIGNATURES, _Archive, _describe, _is_int, _reason

BIAS_CONVENTIONS = ("per_layer", "input_only")


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


def _parameter_shapes(sizes: list[int], bias: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter array, in buffer order: W0, (b0,) W1, (b1,) ... for sizes [n_0, ..., n_L]."""
    shapes = {}
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if bias == "input_only":
            shapes[f"W{layer}"] = (n_in + 1 if layer == 0 else n_in, n_out)
        else:
            shapes[f"W{layer}"] = (n_in, n_out)
            shapes[f"b{layer}"] = (n_out,)
    return shapes


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


def training_memory(
    input_dim: int, model: ModelConfig, num_classes: int, batch_size: int, num_eval: int, itemsize: int = 4
) -> int:
    """Bytes that `fit` allocates for a model, the dataset aside (float32: `itemsize` 4): five parameter-sized
    buffers (parameters, gradients, the optimizer's velocity and scratch, the restore_best snapshot), the batch
    (inputs, one-hot labels, and `_Workspace`'s activations, deltas and scratch) and one evaluation block over a set
    of `num_eval` samples (`evaluate_stack`: hidden activations, logits in two layouts, the row maxima)."""
    eval_rows = min(EVAL_ROWS, num_eval)
    hidden = sum(model.hidden_sizes)
    batch = batch_size * (input_dim + num_classes + (hidden + num_classes) + 2 * hidden)
    evaluation = eval_rows * (hidden + 2 * num_classes + 1)
    return itemsize * (5 * num_parameters(input_dim, model, num_classes) + batch + evaluation)


def machine_memory() -> int | None:
    """This machine's physical memory in bytes, or its cgroup's memory limit when lower; None when unknown."""
    try:
        found = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        found = None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit():  # "max" means no limit
            found = int(limit) if found is None else min(found, int(limit))
    return found


@dataclass
class _Workspace:
    """Preallocated activations and deltas for a batch of at most `rows` samples (of each member, when stacked)."""

    rows: int
    acts: list = field(default_factory=list)  # per layer (..., rows, n_out); the last holds the logits
    deltas: list = field(default_factory=list)  # per hidden layer (..., rows, n_out)
    scratch: list = field(default_factory=list)  # per hidden layer (..., rows, n_out)

    @classmethod
    def allocate(cls, sizes: list[int], rows: int, dtype, members: tuple[int, ...] = ()) -> "_Workspace":
        """Buffers for layer sizes [n_0, ..., n_L]; `members` = (K,) gives each buffer a leading member axis."""
        ws = cls(rows)
        for n_out in sizes[1:]:
            ws.acts.append(np.empty((*members, rows, n_out), dtype=dtype))
        for n_out in sizes[1:-1]:
            ws.deltas.append(np.empty((*members, rows, n_out), dtype=dtype))
            ws.scratch.append(np.empty((*members, rows, n_out), dtype=dtype))
        return ws


def carve(flat: np.ndarray, sizes: list[int], bias: str):
    """Split a flat buffer (P,), or a stack of them (K, P), into per-layer views (a leading K axis is kept):
    (weights, biases, [(W used in matmul, bias row (..., 1, n_out) or None)])."""
    lead = flat.shape[:-1]
    views = {}
    offset = 0
    for name, shape in _parameter_shapes(sizes, bias).items():
        size = math.prod(shape)
        views[name] = flat[..., offset : offset + size].reshape(*lead, *shape)
        offset += size
    assert offset == flat.shape[-1]
    num_layers = len(sizes) - 1
    weights = [views[f"W{layer}"] for layer in range(num_layers)]
    biases = [views.get(f"b{layer}") for layer in range(num_layers)]
    if bias == "input_only":
        lin = [(weights[0][..., :-1, :], weights[0][..., -1:, :])] + [(w, None) for w in weights[1:]]
    else:
        lin = [(w, b[..., None, :]) for w, b in zip(weights, biases)]
    return weights, biases, lin


def forward_pass(lin: list, activation, x: np.ndarray, ws: _Workspace) -> np.ndarray:
    """Forward x: (..., n, input_dim) through the layers `lin` into the workspace; returns the logits view
    (..., n, num_classes). A leading member axis on x, the weights and the workspace makes it a stacked pass."""
    n = x.shape[-2]
    a = x
    last = len(lin) - 1
    for layer, (w, b) in enumerate(lin):
        h = ws.acts[layer] if n == ws.rows else ws.acts[layer][..., :n, :]
        np.matmul(a, w, out=h)
        if b is not None:
            h += b
        if layer != last:
            activation.forward_(h)
        a = h
    return a


def backward_pass(lin: list, glin: list, activation, x: np.ndarray, ws: _Workspace, dlogits: np.ndarray) -> None:
    """Fill the gradient views `glin` from dL/dlogits: (..., n, num_classes), using the activations cached by
    `forward_pass` (stacked like it when the arrays carry a member axis)."""
    d = dlogits
    for layer in range(len(lin) - 1, -1, -1):
        a_prev = x if layer == 0 else ws.acts[layer - 1]
        gw, gb = glin[layer]
        np.matmul(np.swapaxes(a_prev, -1, -2), d, out=gw)
        if gb is not None:
            np.sum(d, axis=-2, keepdims=True, out=gb)
        if layer:
            d_prev = ws.deltas[layer - 1]
            np.matmul(d, np.swapaxes(lin[layer][0], -1, -2), out=d_prev)
            activation.backward_(d_prev, a_prev, ws.scratch[layer - 1])
            d = d_prev


EVAL_ROWS = 2048  # rows per evaluation block (see docs/population.md for the measurements)


def evaluate_stack(lin: list, activation, x: np.ndarray, y: np.ndarray, rows: int = EVAL_ROWS, loss: bool = True):
    """(mean cross-entropy, accuracy) of each of K stacked members over x: (N, input_dim), labels y: (N,); `lin` as
    `carve` gives it for a (K, P) stack (at least one hidden layer). Returns two (K,) float64 arrays; the loss is None
    with `loss=False` (accuracy only: no exp/log pass).

    In row blocks: every layer is a stacked matmul (K BLAS calls of one shape, the first broadcasting the block
    x_block over the members), and the output layer's logits are laid out as (K, classes, rows), so that every
    reduction over the classes (max, exp-sum) runs over long contiguous rows instead of 10-wide ones. Each member's
    numbers are those of its own calls, whatever its position: one wide GEMM x_block @ [W_0 of every member] gave a
    member's loss bits that depended on its column offset under OpenBLAS's Haswell kernels (docs/population.md).
    Accuracy is exactly argmax's: a sample counts when its label's logit is the unique maximum; tied or non-finite
    columns (rare) go through argmax itself (first maximum, first NaN). The loss is one log-sum-exp per sample with
    float64 sums."""
    w0, b0 = lin[0]
    members, n_in, hidden = w0.shape
    n = x.shape[0]
    dtype = w0.dtype
    rows = max(1, min(rows, n))
    first = np.empty((members, rows, hidden), dtype=dtype)
    middle = [np.empty((members, rows, w.shape[-1]), dtype=dtype) for w, _ in lin[1:-1]]
    w_out, b_out = lin[-1]
    b_out_t = None if b_out is None else np.swapaxes(b_out, -1, -2)  # (K, classes, 1)
    logits_rows = np.empty((members, rows, w_out.shape[-1]), dtype=dtype)
    logits_t = np.empty((members, w_out.shape[-1], rows), dtype=dtype)
    top_buf = np.empty((members, 1, rows), dtype=dtype)
    total_loss = np.zeros(members, dtype=np.float64)
    correct = np.zeros(members, dtype=np.int64)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        m = stop - start
        a = first[:, :m]
        np.matmul(x[start:stop], w0, out=a)
        if b0 is not None:
            a += b0
        activation.forward_(a)
        for (w, b), buf in zip(lin[1:-1], middle):
            out = buf[:, :m]
            np.matmul(a, w, out=out)
            if b is not None:
                out += b
            activation.forward_(out)
            a = out
        logits = logits_t[..., :m]
        # a row-major GEMM and a transposing copy: 1.3x faster than the GEMM written transposed (classes x rows)
        np.copyto(logits, np.swapaxes(np.matmul(a, w_out, out=logits_rows[:, :m]), -1, -2))
        if b_out_t is not None:
            logits += b_out_t
        top = top_buf[..., :m]
        np.max(logits, axis=-2, keepdims=True, out=top)
        labels = y[start:stop]
        picked = np.take_along_axis(logits, np.broadcast_to(labels, (members, 1, m)), axis=-2)
        unique = np.count_nonzero(logits == top, axis=-2) == 1  # (K, m); NaN columns count 0
        correct += np.count_nonzero((picked[:, 0] == top[:, 0]) & unique, axis=-1)
        if not unique.all():
            member, column = np.nonzero(~unique)
            hits = logits[member, :, column].argmax(axis=-1) == labels[column]
            correct += np.bincount(member[hits], minlength=members)
        if loss:
            logits -= top
            np.exp(logits, out=logits)
            log_norm = np.log(logits.sum(axis=-2, dtype=np.float64))
            total_loss += log_norm.sum(axis=-1) - (picked - top).sum(axis=(1, 2), dtype=np.float64)
    n = max(1, n)
    return (total_loss / n if loss else None), correct / n


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
        return carve(flat, self.sizes, self.config.bias)

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
            ws = self._workspaces[rows] = _Workspace.allocate(self.sizes, rows, self.dtype)
        return ws

    def _forward(self, x: np.ndarray, ws: _Workspace) -> np.ndarray:
        """Forward x: (n, input_dim) into the workspace; returns the logits view (n, num_classes)."""
        return forward_pass(self._lin, self.activation, x, ws)

    def _backward(self, x: np.ndarray, ws: _Workspace, dlogits: np.ndarray) -> None:
        """Fill `grads` from dL/dlogits: (n, num_classes), using the activations cached by `_forward`."""
        backward_pass(self._lin, self._glin, self.activation, x, ws, dlogits)

    # ---------------------------------------------------------------- public API
    def gradients(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """dL/dparams of the mean cross-entropy over one batch x: (n, input_dim), labels y: (n,) ints, as a flat copy
        in the layout of `params` (W0, (b0,) W1, ...); `grads` holds the same values afterwards."""
        x = self._check_input(x)
        ws = self._workspace(x.shape[0])
        logits = self._forward(x, ws)
        dlogits = logits - logits.max(axis=1, keepdims=True)
        np.exp(dlogits, out=dlogits)
        dlogits /= dlogits.sum(axis=1, keepdims=True)
        dlogits[np.arange(len(y)), y] -= 1.0
        dlogits /= len(y)
        self._backward(x, ws, dlogits)
        return self.grads.copy()

    def parameters(self) -> list[np.ndarray]:
        """The parameter arrays in buffer order: W0, (b0,) W1, (b1,) ... (views into `params`)."""
        return [p for w, b in zip(self.weights, self.biases) for p in (w, b) if p is not None]

    def assign(self, source: "MLP | list[np.ndarray]") -> None:
        """Copy the parameters of `source`, an MLP of this architecture or its `parameters()` arrays, into this one
        (converted to this model's dtype). ValueError naming the first array that does not fit."""
        arrays = source.parameters() if isinstance(source, MLP) else list(source)
        mine = self.parameters()
        if len(arrays) != len(mine):
            raise ValueError(
                f"initial weights: got {len(arrays)} arrays but {self!r} has {len(mine)} "
                f"({', '.join(str(p.shape) for p in mine)})"
            )
        for index, (target, array) in enumerate(zip(mine, arrays)):
            array = np.asarray(array)
            if array.shape != target.shape:
                raise ValueError(f"initial weights: array {index} has shape {array.shape}, {self!r} needs {target.shape}")
        for target, array in zip(mine, arrays):
            target[...] = array

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

    def evaluate(self, x: np.ndarray, y: np.ndarray, chunk_size: int = EVAL_ROWS) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) over the whole set, in row blocks; sums are accumulated in float64."""
        loss, accuracy = self._evaluate(x, y, chunk_size, loss=True)
        return float(loss[0]), float(accuracy[0])

    def accuracy(self, x: np.ndarray, y: np.ndarray, chunk_size: int = EVAL_ROWS) -> float:
        """The accuracy of `evaluate` alone (no loss: skips its exp and log passes)."""
        return float(self._evaluate(x, y, chunk_size, loss=False)[1][0])

    def _evaluate(self, x, y, chunk_size, loss):
        x = self._check_input(x)
        lin = [(w[None], None if b is None else b[None]) for w, b in self._lin]
        return evaluate_stack(lin, self.activation, x, np.asarray(y), chunk_size, loss=loss)

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
        """Rebuild a model written by `save`, trusting nothing in the file until it is checked.

        Checked before the model is allocated: the members are uncompressed and fit in the file; the metadata is a
        valid architecture of format_version 1; the arrays are exactly the ones that architecture needs, each with
        its shape and the stored dtype, as their .npy headers declare, and each holds as many bytes as it declares.
        Object arrays are refused unread, so nothing is unpickled. A file that fails a check raises a one-sentence
        ValueError naming the file and the key; a file that cannot be opened raises the usual OSError."""
        where = os.fspath(path)
        with open(path, "rb") as fh:
            if fh.read(4) not in _ZIP_SIGNATURES:
                raise ValueError(f"{where}: not an .npz archive (it does not start with a zip signature)")
            fh.seek(0)
            file_size = os.fstat(fh.fileno()).st_size
            try:
                archive = zipfile.ZipFile(fh)
            except (zipfile.BadZipFile, EOFError, ValueError) as err:
                raise ValueError(f"{where}: not a readable .npz archive ({_reason(err)})") from None
            with archive:
                return cls._load_archive(_Archive(archive, file_size, where))

    @classmethod
    def _load_archive(cls, archive: "_Archive") -> "MLP":
        where = archive.where
        meta = archive.read_meta()
        input_dim, num_classes, dtype = meta["input_dim"], meta["num_classes"], meta["dtype"]
        try:
            config = ModelConfig(
                hidden_sizes=meta["hidden_sizes"], activation=meta["activation"], init=meta["init"], bias=meta["bias"]
            )
        except (ValueError, TypeError) as err:
            raise ValueError(f"{where}: the stored architecture is invalid: {_reason(err)}") from None
        shapes = _parameter_shapes([input_dim, *config.hidden_sizes, num_classes], config.bias)
        arch = "-".join(str(n) for n in [input_dim, *config.hidden_sizes, num_classes])
        stored = f"the stored architecture {arch} with bias {config.bias}"
        for key in archive.members:
            if key != "meta" and key not in shapes:
                expected = ", ".join(["meta", *shapes])
                raise ValueError(f"{where}: unexpected array {key!r}; {stored} holds only {expected}")
        for key, shape in shapes.items():
            if key not in archive.members:
                raise ValueError(f"{where}: array {key!r} is missing but {stored} needs it with shape {shape}")
            found_shape, found_dtype, data_bytes = archive.header(key)
            if found_dtype.newbyteorder("=") != np.dtype(dtype):  # either byte order holds the same values
                raise ValueError(
                    f"{where}: array {key!r} has dtype {_describe(found_dtype)} but the stored dtype is {dtype}"
                )
            if found_shape != shape:
                raise ValueError(f"{where}: array {key!r} has shape {found_shape} but {stored} needs {shape}")
            archive.check_data_size(key, found_shape, found_dtype, data_bytes)

        # Everything above read headers only; the model is as large as the arrays the file really holds.
        model = cls(input_dim, config, num_classes, rng=0, dtype=np.dtype(dtype))
        for i, w in enumerate(model.weights):
            w[...] = archive.read_array(f"W{i}")
        for i, b in enumerate(model.biases):
            if b is not None:
                b[...] = archive.read_array(f"b{i}")
        return model

    def __repr__(self) -> str:
        arch = "-".join(str(s) for s in self.sizes)
        return f"MLP({arch}, activation={self.config.activation}, bias={self.config.bias}, params={self.num_parameters})"
