"""Sweeps: the Hydra callback that gives a multirun its MLflow parent run (``callbacks``), the dry run (``dryrun``),
population training (``population``) and the random/TPE search (``search``, ``study``, ``trial``)."""
