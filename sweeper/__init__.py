"""sweeper: the Hydra app and MLflow tracking around mlp_core.

app (the entry point), names (the MLflow contract), paths, redact, and the subpackages config/, tracking/, sweep/ and
reporting/; see README's "Project layout".
"""
