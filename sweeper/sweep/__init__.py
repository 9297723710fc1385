"""Sweeps: the Hydra callback that gives a multirun its MLflow parent run (``callbacks``) and the dry run (``dryrun``)."""
