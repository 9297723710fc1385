"""Weight initialisation schemes.

`fan_in` is the number of inputs of a unit, counting the constant-1 bias input when the course's bias trick is used
(785 for the first MNIST layer).
"""

from __future__ import annotations

import math

import numpy as np

INITS = ("uniform", "fan_in", "he", "xavier")


def check_init(name: str) -> None:
    if name not in INITS:
        raise ValueError(f"unknown init {name!r}; valid choices: {', '.join(INITS)}")


def draw_weights(name: str, shape: tuple[int, int], fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """A float64 array of `shape` drawn with scheme `name`.

    - uniform: U[-1, 1] (the course's default)
    - fan_in:  N(0, std = 1/sqrt(fan_in)) (the course's "improved" init)
    - he:      N(0, std = sqrt(2/fan_in)) (for ReLU)
    - xavier:  U[-b, b], b = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio)
    """
    check_init(name)
    if name == "uniform":
        return rng.uniform(-1.0, 1.0, size=shape)
    if name == "fan_in":
        return rng.normal(0.0, 1.0 / math.sqrt(fan_in), size=shape)
    if name == "he":
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)
