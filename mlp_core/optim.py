"""Stochastic gradient descent with (heavy-ball) momentum, as in the course.

    v <- g + gamma * v          (v starts at 0)
    w <- w - lr * v

With gamma = 0 this is plain SGD: w <- w - lr * g.
"""

from __future__ import annotations

import math

import numpy as np


class SGD:
    """Explicit state (`velocity`) plus an in-place `step(params, grads)` over flat buffers; state allocated once."""

    def __init__(self, lr: float, momentum: float = 0.0):
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"learning rate must be a finite number > 0, got {lr!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.velocity: np.ndarray | None = None
        self._scaled: np.ndarray | None = None

    def init(self, params: np.ndarray) -> None:
        """Allocate the state for a flat parameter buffer; the velocity starts at zero."""
        self.velocity = np.zeros_like(params)
        self._scaled = np.empty_like(params)

    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        """One update, in place on `params`."""
        if self.velocity is None or self.velocity.shape != params.shape:
            self.init(params)
        if self.momentum:
            momentum_step(params, grads, self.velocity, self._scaled, self.lr, self.momentum)
        else:
            np.multiply(grads, self.lr, out=self._scaled)
            params -= self._scaled


def momentum_step(params, grads, velocity, scaled, lr, momentum) -> None:
    """v <- g + momentum * v; w <- w - lr * v, in place; `scaled` is scratch of params' shape.

    `lr` and `momentum` are Python floats, or (K, 1) arrays of params' dtype for a stack of K members' (K, P)
    buffers. With momentum 0 this is bit-identical to plain SGD for finite v: 0 * v + g = g."""
    velocity *= momentum
    velocity += grads
    np.multiply(velocity, lr, out=scaled)
    params -= scaled
