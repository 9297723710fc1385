"""Hydra plugin of mlp-sweeps: the `dryrun` launcher (`mlp-sweep -m ... hydra/launcher=dryrun`)."""
