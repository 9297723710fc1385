"""Hydra plugin of mlp-sweeps: the search sweepers (`mlp-sweep -m hydra/sweeper=random|tpe ...`)."""
