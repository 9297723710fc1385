"""sweeper: the Hydra app and MLflow tracking around mlp_core.

app (the entry point), lifecycle + job (a job from its config to its run's end), names (the MLflow contract), handoff
(the files a sweep hands its jobs), launchers (which launcher and sweeper run), paths, redact, signals, and the
subpackages config/, tracking/, sweep/ and reporting/; see README's "Project layout".
"""
