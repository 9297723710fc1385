"""A search job's side of its Optuna trial: the tags that name it, the pruning reports, the objective it returns.

The search sweeper (``sweeper.sweep.study``) writes, before it launches a batch, ``names.SEARCH_FILE`` in the sweep dir
(``sweeper.handoff``): the study's storage and name, the pruner and objective, and the trial number of each job number. A job finds its
trial there by ``hydra.job.num`` (every launcher gives each job its number, in-process, joblib workers, submitit and
Slurm alike), opens the same storage, and at each validation point reports its curve to the trial; when the pruner
says so it asks ``fit`` to stop (stop_reason ``pruned``, see ``mlp_core.fit``) and marks the trial's user attribute
``names.PRUNED_ATTR`` so that the sweeper tells the trial PRUNED. The sweeper alone calls ``tell``: then a batch's
trials never see each other finish, and the median pruner's decisions do not depend on the order jobs end in.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from hydra.types import RunMode

from .. import handoff, names
from .search import make_pruner, objective_value, open_storage, pruning_curve

if TYPE_CHECKING:
    from hydra.conf import HydraConf
    from mlflow.entities import Run
    from mlp_core.train import Event
    from optuna.trial import Trial


class TrialLink:
    """The trial of one search job, opened on first use (a ``sweeper.job.Trial``)."""

    def __init__(self, info: dict, number: int) -> None:
        self.info, self.number = info, number
        self.curve, _ = pruning_curve(info["objective"])
        self.maximize = info["direction"] == "maximize"
        self._trial: Trial | None = None
        self._best: float | None = None

    @classmethod
    def of_job(cls, hydra_cfg: HydraConf | None) -> TrialLink | None:
        """The job's trial, or None when the job is not part of a search."""
        if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
            return None
        info = handoff.read_search(hydra_cfg.sweep.dir)
        number = info["trials"].get(str(hydra_cfg.job.num)) if info else None
        return None if number is None else cls(info, int(number))

    @property
    def trial(self) -> Trial:
        if self._trial is None:
            import optuna

            storage = open_storage(self.info["storage"])
            study = optuna.load_study(study_name=self.info["study_name"], storage=storage,
                                      sampler=optuna.samplers.RandomSampler(), pruner=make_pruner(self.info))
            study_id = storage.get_study_id_from_name(self.info["study_name"])
            self._trial = optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id,
                                                                                                     self.number))
        return self._trial

    def tags(self) -> dict[str, str]:
        return {names.TRIAL_NUMBER: str(self.number), names.STUDY_NAME: self.info["study_name"]}

    def observe(self, event: Event) -> str | None:
        """The fit observer: report the curve at each validation point; "pruned" when the pruner says stop."""
        from mlp_core import ValidationPoint  # NumPy: the entry point imports this module for --help too

        if self.info["pruner"] == "none" or not isinstance(event, ValidationPoint):
            return None
        value = event.val_accuracy if self.curve == names.VAL_ACCURACY else event.val_loss
        if not math.isfinite(value):
            return None
        if self.info["objective"].startswith("best/"):  # the best so far, as the objective will be
            better = max if self.maximize else min
            value = value if self._best is None else better(self._best, value)
            self._best = value
        self.trial.report(value, event.step)
        if self.trial.should_prune():
            self.trial.set_user_attr(names.PRUNED_ATTR, int(event.step))
            return names.STOP_PRUNED
        return None

    def end_tags(self, stop_reason: str) -> dict[str, str]:
        """The trial state (and the ``pruned`` tag) of a run that ended FINISHED."""
        if stop_reason == names.STOP_PRUNED:
            return {names.TRIAL_STATE: "PRUNED", names.PRUNED_TAG: "true"}
        return {names.TRIAL_STATE: "COMPLETE"}

    def objective(self, metrics: dict[str, float]) -> float:
        """What the job returns to the sweeper: the study's objective among the run's summary metrics."""
        return objective_value(metrics.get(self.info["objective"]), self.info["direction"])

    def reused(self, run: Run) -> float:
        """The objective of a FINISHED run this trial reuses; a run that was pruned makes the trial PRUNED too."""
        value = objective_value(run.data.metrics.get(self.info["objective"]), self.info["direction"])
        if run.data.tags.get(names.STOP_REASON) == names.STOP_PRUNED:
            if math.isfinite(value):
                self.trial.report(value, int(run.data.metrics.get(names.STEPS, 0)))
            self.trial.set_user_attr(names.PRUNED_ATTR, int(run.data.metrics.get(names.STEPS, 0)))
        return value
