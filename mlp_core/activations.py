"""Hidden-layer activations, each with its forward and its derivative side by side.

Every activation here has a derivative that can be written in terms of its *output* a = f(z), so the training loop
keeps only the activations (no pre-activation buffers) and the backward pass reuses what the forward cached.

Kernels work in place on preallocated buffers and scale only by Python floats, so float32 stays float32.
"""

from __future__ import annotations

import numpy as np

ACTIVATIONS = ("sigmoid", "improved_sigmoid", "relu", "tanh")

# LeCun, "Efficient BackProp": f(z) = 1.7159 tanh(2z/3).
LECUN_A = 1.7159
LECUN_B = 2.0 / 3.0


class Activation:
    """A hidden activation: `f` / `df_from_output` are the plain reference forms (any dtype), `forward_` and
    `backward_` the in-place training kernels."""

    name: str = ""

    def f(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def df_from_output(self, a: np.ndarray) -> np.ndarray:
        """f'(z) expressed through a = f(z)."""
        raise NotImplementedError

    def forward_(self, h: np.ndarray) -> None:
        """Overwrite the pre-activation h with f(h)."""
        raise NotImplementedError

    def backward_(self, delta: np.ndarray, a: np.ndarray, tmp: np.ndarray) -> None:
        """delta *= f'(z), with f' computed from the cached output a; tmp is scratch of a's shape."""
        raise NotImplementedError


class Sigmoid(Activation):
    """f(z) = 1 / (1 + e^{-z});  f'(z) = f(z) (1 - f(z)).

    Computed as 0.5 + 0.5 tanh(z/2), which is the same function without exp overflow for very negative z."""

    name = "sigmoid"

    def f(self, z):
        return 0.5 + 0.5 * np.tanh(0.5 * z)

    def df_from_output(self, a):
        return a * (1.0 - a)

    def forward_(self, h):
        h *= 0.5
        np.tanh(h, out=h)
        h *= 0.5
        h += 0.5

    def backward_(self, delta, a, tmp):
        np.subtract(1.0, a, out=tmp)
        tmp *= a
        delta *= tmp


class ImprovedSigmoid(Activation):
    """f(z) = 1.7159 tanh(2z/3);  f'(z) = 1.7159 (2/3) (1 - tanh²(2z/3)) = (2/3) (1.7159 - f(z)² / 1.7159)."""

    name = "improved_sigmoid"

    def f(self, z):
        return LECUN_A * np.tanh(LECUN_B * z)

    def df_from_output(self, a):
        return LECUN_A * LECUN_B * (1.0 - (a / LECUN_A) ** 2)

    def forward_(self, h):
        h *= LECUN_B
        np.tanh(h, out=h)
        h *= LECUN_A

    def backward_(self, delta, a, tmp):
        np.square(a, out=tmp)
        tmp *= -LECUN_B / LECUN_A
        tmp += LECUN_A * LECUN_B
        delta *= tmp


class ReLU(Activation):
    """f(z) = max(z, 0);  f'(z) = 1 where z > 0 (equivalently a > 0), else 0."""

    name = "relu"

    def f(self, z):
        return np.maximum(z, 0.0)

    def df_from_output(self, a):
        return (a > 0).astype(a.dtype)

    def forward_(self, h):
        np.maximum(h, 0.0, out=h)

    def backward_(self, delta, a, tmp):
        np.copyto(delta, 0.0, where=a <= 0)


class Tanh(Activation):
    """f(z) = tanh(z);  f'(z) = 1 - f(z)²."""

    name = "tanh"

    def f(self, z):
        return np.tanh(z)

    def df_from_output(self, a):
        return 1.0 - a * a

    def forward_(self, h):
        np.tanh(h, out=h)

    def backward_(self, delta, a, tmp):
        np.square(a, out=tmp)
        np.subtract(1.0, tmp, out=tmp)
        delta *= tmp


_REGISTRY = {cls.name: cls for cls in (Sigmoid, ImprovedSigmoid, ReLU, Tanh)}


def get_activation(name: str) -> Activation:
    """The activation called `name`; ValueError naming the valid choices otherwise."""
    try:
        return _REGISTRY[name]()
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; valid choices: {', '.join(ACTIVATIONS)}") from None
