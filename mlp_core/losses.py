"""Softmax cross-entropy: the per-sample sum over classes, averaged over the batch (SPEC), with the gradient under
the same convention. Numerically stable through max-subtraction (log-sum-exp)."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits: (N, C) -> (N, C); rows sum to 1 for any finite logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the batch of -log softmax(logits)[label]. logits: (N, C), labels: (N,) ints."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_norm - shifted[np.arange(len(labels)), labels]))


def cross_entropy_grad(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """d cross_entropy / d logits = (softmax - onehot) / N."""
    grad = softmax(logits)
    grad[np.arange(len(labels)), labels] -= 1.0
    return grad / len(labels)


class FusedSoftmaxCE:
    """In-place softmax cross-entropy for a fixed batch shape: forward and gradient in one pass, no allocation.

    `__call__(logits, onehot)` returns the batch loss (Python float) and overwrites `logits` with dL/dlogits.
    With `members=K` it takes a stack of K batches, logits and onehot: (K, batch_size, num_classes), and returns the
    K batch losses as a (K,) float64 array."""

    def __init__(self, batch_size: int, num_classes: int, dtype=np.float32, members: int | None = None):
        lead = () if members is None else (members,)
        self.rowmax = np.empty((*lead, batch_size, 1), dtype=dtype)
        self.rowsum = np.empty((*lead, batch_size, 1), dtype=dtype)
        self.inv_n = 1.0 / batch_size

    def __call__(self, logits: np.ndarray, onehot: np.ndarray):
        rowmax, rowsum = self.rowmax, self.rowsum
        np.max(logits, axis=-1, keepdims=True, out=rowmax)
        logits -= rowmax
        # loss = mean(log sum exp(shifted)) - mean(shifted[label]); the dot picks shifted[label] through the one-hot.
        stacked = logits.ndim == 3
        picked = np.einsum("kbc,kbc->k", logits, onehot) if stacked else float(np.vdot(logits, onehot))
        np.exp(logits, out=logits)
        np.sum(logits, axis=-1, keepdims=True, out=rowsum)
        if stacked:
            loss = (np.log(rowsum).sum(axis=(1, 2)).astype(np.float64) - picked) * self.inv_n
        else:
            loss = (float(np.log(rowsum).sum()) - picked) * self.inv_n
        logits /= rowsum
        logits -= onehot
        logits *= self.inv_n
        return loss
