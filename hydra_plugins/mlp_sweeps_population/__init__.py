"""Hydra plugin of mlp-sweeps: the `population` launcher (`mlp-sweep -m ... hydra/launcher=population`)."""
