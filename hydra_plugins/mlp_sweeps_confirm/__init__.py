"""Hydra plugin of mlp-sweeps: the confirm sweeper (`mlp-sweep -m hydra/sweeper=confirm ...`)."""
