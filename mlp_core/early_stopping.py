"""Early stopping on the validation loss, counted in validation checks (SPEC).

"Improvement" means strictly lower than the best so far; a tie is not an improvement. The run stops as soon as the
best value is `patience` checks old.
"""

from __future__ import annotations

import math


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
