"""The MLflow contract: every metric key, summary metric, tag and param name the app writes and reads.

The tracker writes these names, the reports, the resume logic and the tests read them; nothing else in the project
spells them out, so a renamed metric is renamed everywhere at once.
"""
from __future__ import annotations

# ---------------------------------------------------------------------------------------------- metric curves
# step = the global training step of the run
TRAIN_LOSS = "train/loss"            # every step
TRAIN_ACCURACY = "train/accuracy"    # at each validation point
VAL_LOSS = "val/loss"                # at each validation point
VAL_ACCURACY = "val/accuracy"        # at each validation point
CURVE_METRICS = (TRAIN_LOSS, TRAIN_ACCURACY, VAL_LOSS, VAL_ACCURACY)

# ---------------------------------------------------------------------------------------------- summary metrics
# logged once at step 0 when a run ends
NUM_PARAMETERS = "num_parameters"
BEST_VAL_LOSS = "best/val_loss"
BEST_VAL_ACCURACY = "best/val_accuracy"
# final/*: the returned (saved) model evaluated on the validation split at the end of training, after restore_best;
# not the last validation point, which can lie up to a validation interval before the last step
FINAL_VAL_LOSS = "final/val_loss"
FINAL_VAL_ACCURACY = "final/val_accuracy"
EPOCHS = "epochs"
STEPS = "steps"
TRAIN_SECONDS = "train_seconds"
SUMMARY_METRICS = (NUM_PARAMETERS, BEST_VAL_LOSS, BEST_VAL_ACCURACY, FINAL_VAL_LOSS, FINAL_VAL_ACCURACY, EPOCHS,
                   STEPS, TRAIN_SECONDS)
OBJECTIVE = BEST_VAL_LOSS  # what a job returns to Hydra and what "best" means in a sweep

# ---------------------------------------------------------------------------------------------- params
# besides the resolved config with dotted keys (model.hidden_sizes, optimizer.lr, ...)
EFFECTIVE_HIDDEN_SIZES_PARAM = "model.effective_hidden_sizes"
SEED_PARAM = "trainer.seed"
# the model's effective shape, logged over the config's own width/depth/hidden_sizes (which may be unused or null)
HIDDEN_SIZES_PARAM = "model.hidden_sizes"          # the effective list, e.g. [64] or [60, 60]
WIDTH_PARAM = "model.width"                        # the widest hidden layer (= width for a width x depth model)
DEPTH_PARAM = "model.depth"                        # the number of hidden layers
NUM_HIDDEN_LAYERS_PARAM = "model.num_hidden_layers"  # the same number, under the name that says what it counts
BLAS_THREADS_PARAM = "runtime.blas_threads"
# the run's name label: the top-level config key `name` that the experiment presets set
NAME_PARAM = "name"

# ---------------------------------------------------------------------------------------------- run tags
CONFIG_HASH = "config_hash"                # identity of what is trained (sweeper.config.identity)
CONFIG_HASH_NOSEED = "config_hash_noseed"  # the same without the seed: groups the seeds of one config
STOP_REASON = "stop_reason"                # max_epochs | early_stopping | diverged | pruned
EXPERIMENT = "experiment"                  # the preset's name (cfg.name)
CONFIG_LABEL = "config_label"              # readable and one per config_hash_noseed: what the UI view groups by
OVERRIDES = "hydra.overrides"
OUTPUT_DIR = "hydra.output_dir"
SWEEP_DIR = "hydra.sweep_dir"
SWEEP_ID = "sweep_id"
BLAS_THREADS = "blas_threads"
ENGINE = "engine"                          # population(K) for a member of a fused population; absent for solo runs
GIT_COMMIT = "git_commit"
GIT_DIRTY = "git_dirty"
ERROR = "error"
ERROR_TRACEBACK = "error_traceback"
# MLflow's own tags
PARENT_RUN_ID = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
SOURCE_NAME = "mlflow.source.name"
SOURCE_GIT_COMMIT = "mlflow.source.git.commit"
DATASET_CONTEXT = "mlflow.data.context"
SOURCE_NAME_VALUE = "mlp-sweep"
RUN_COLOR = "mlflow.runColor"              # "#rrggbb": the run's line colour in the UI (its config's colour)
# MLflow's experiment tags (set when the tool creates the experiment)
PRIMARY_METRIC = "mlflow.experiment.primaryMetric.name"
PRIMARY_METRIC_GREATER_IS_BETTER = "mlflow.experiment.primaryMetric.greaterIsBetter"
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."  # + view id: a saved view of the runs page (sweeper.tracking.views)

# ---------------------------------------------------------------------------------------------- liveness and resume
HOST = "mlp_sweeps.host"
PID = "mlp_sweeps.pid"
PID_START = "mlp_sweeps.pid_start"
HEARTBEAT = "mlp_sweeps.heartbeat"
KILLED_REASON = "mlp_sweeps.killed_reason"
# a job's claim on its config (sweeper.tracking.claims): "pending", then its place in line (an integer)
CLAIM_TICKET = "mlp_sweeps.claim_ticket"
CLAIM_PENDING = "pending"
# + sweep_id; value: the sweep's parent run id, on every run of the sweep (trained by it or reused from earlier launches)
SWEEP_LINK_PREFIX = "mlp_sweeps.sweep."

# ---------------------------------------------------------------------------------------------- sweep parent
ROLE = "mlp_sweeps.role"
ROLE_SWEEP_PARENT = "sweep_parent"
SWEEP_CHILDREN = "sweep_children"
SWEEP_CHILDREN_REUSED = "sweep_children_reused"
SWEEP_CHILDREN_FINISHED = "sweep_children_finished"
BEST_CHILD_RUN_ID = "best_child_run_id"
BEST_CHILD_NAME = "best_child_name"
SWEEP_VERDICT = "sweep_verdict"  # one sentence: the best config against the runner-up over shared seeds
IMPORTANCE_PREFIX = "importance/"  # parent metrics importance/<swept key>: its fANOVA importance (reporting.importance)
# the parent also carries BEST_VAL_LOSS and BEST_VAL_ACCURACY as tags (the best child's values)

# ---------------------------------------------------------------------------------------------- search (Optuna)
STOP_PRUNED = "pruned"                     # the stop_reason of a run its trial's pruner stopped
PRUNED_TAG = "pruned"                      # "true" on a run that its pruner stopped (it still ends FINISHED)
TRIAL_NUMBER = "optuna.trial_number"       # child run tags
TRIAL_STATE = "optuna.trial_state"         # COMPLETE | PRUNED | FAIL
STUDY_NAME = "optuna.study_name"           # child and parent run tag
PRUNED_ATTR = "pruned_at_step"             # Optuna user attribute a job sets on its trial when pruned
WARMUP_ATTR = "warmup_steps"               # Optuna user attribute: the trial is not judged before this step
WARM_START_ATTR = "warm_start_run_id"      # Optuna user attribute: the earlier run a warm-start trial stands for
SEARCH_PARAM_PREFIX = "search."            # parent params: search.sampler, search.seed, search.space.<key>, ...
BEST_TRIAL = "optuna.best_trial"           # parent tags at the end of a search
BEST_TRIAL_VALUE = "optuna.best_value"
BEST_TRIAL_PARAMS = "optuna.best_params"
SEARCH_OBJECTIVE = "optuna.objective"      # parent tags (a search's or the confirm sweeper's): the summary's order
SEARCH_DIRECTION = "optuna.direction"
SEARCH_FILE = "optuna_search.json"         # the search handoff in hydra.sweep.dir (sweeper.sweep.trial)
CONFIRM_FILE = "confirm.json"              # the confirm sweeper's plan, looks and verdict in hydra.sweep.dir
CONFIRM_VERDICT = "confirm_verdict"        # parent tag: the confirm sweeper's sentence (sweeper.sweep.confirm)
CONFIRM_PARAM_PREFIX = "confirm."          # parent params: confirm.top_k, confirm.max_seeds, confirm.schedule, ...
OPTIMIZATION_HISTORY = "optimization_history.png"
PARALLEL_COORDINATES = "parallel_coordinates.png"
SLICE_PLOT = "slice.png"

# the parent-run handoff: a JSON file in hydra.sweep.dir that every job of the sweep reads
PARENT_FILE = "mlflow_parent.json"
# a run's metric points that never reached the store (sweeper.tracking.spill), in its Hydra run dir
SPILL_FILE = "metrics_spill.jsonl"


def sweep_link_tag(sweep_id: str) -> str:
    """The tag every run of a sweep gets: the runs it trained and those it reused instead of rerunning them."""
    return SWEEP_LINK_PREFIX + sweep_id
