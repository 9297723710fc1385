"""sweeper: the Hydra app and MLflow tracking around mlp_core."""
