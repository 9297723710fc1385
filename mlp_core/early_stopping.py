"""Early stopping on the validation loss, counted in validation checks (SPEC), and the one stop rule that both
training engines (`fit`, `fit_population`) apply at a validation point.

"Improvement" means strictly lower than the best so far; a tie is not an improvement. The run stops as soon as the
best value is `patience` checks old.
"""

from __future__ import annotations

import math

import numpy as np


class EarlyStopping:
    def __init__(self, patience: int):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1 (validation checks), got {patience!r}")
        self.patience = patience
        self.best = math.inf
        self.checks_since_best = 0

    def update(self, val_loss: float) -> tuple[bool, bool]:
        """Record one validation check. Returns (improved, should_stop)."""
        if val_loss < self.best:
            self.best = val_loss
            self.checks_since_best = 0
            return True, False
        self.checks_since_best += 1
        return False, self.checks_since_best >= self.patience


class StopRule:
    """Why a run stops at a validation point, and the best weights it restores (`train`: a TrainConfig).

    Precedence: a non-finite validation loss is "diverged", whatever the observer says; else an observer's verdict
    (a non-empty str, e.g. "pruned"); else "early_stopping" when enabled and the best loss is `patience` checks old.
    Early stopping's state is updated at every finite validation point, the observer's stopping point included, so
    that point is a best-weights candidate like any other.

    With `restore_best` the rule owns a snapshot of the weights at the best validation point, taken at the first
    finite validation point (always an improvement on +inf) and overwritten in place on each improvement: there is
    never an unwritten snapshot to restore, and no allocation after the first point.
    """

    def __init__(self, train):
        self.stopper = EarlyStopping(train.patience)
        self.early_stopping = train.early_stopping
        self.restore_best = train.restore_best
        self.best_params: np.ndarray | None = None
        self.best_point = -1  # index of the best validation point among the run's points; -1 before the first
        self.points = 0

    def at_validation_point(self, val_loss: float, params: np.ndarray, verdict: object) -> str:
        """Record a validation point of the weights `params`; return why the run stops here, or "" to go on."""
        self.points += 1
        if not math.isfinite(val_loss):
            return "diverged"
        improved, should_stop = self.stopper.update(val_loss)
        if improved:
            self.best_point = self.points - 1
            if self.restore_best:
                if self.best_params is None:
                    self.best_params = params.copy()
                else:
                    self.best_params[...] = params
        if isinstance(verdict, str) and verdict:
            return verdict
        return "early_stopping" if self.early_stopping and should_stop else ""

    def restore(self, params: np.ndarray, stop_reason: str) -> bool:
        """Put the best weights into `params` when restore_best applies (never to a diverged run); True if it did."""
        if self.best_params is None or stop_reason == "diverged":
            return False
        params[...] = self.best_params
        return True
