import numpy as np
import pytest

from mlp_core.data import Dataset, Split, clear_dataset_cache


def synthetic_dataset(n_train=640, n_val=200, dim=20, classes=10, seed=0) -> Dataset:
    """A small learnable problem: labels from a fixed random linear map of Gaussian inputs."""
    rng = np.random.default_rng(seed)
    proj = rng.normal(size=(dim, classes))
    x = rng.normal(size=(n_train + n_val, dim)).astype(np.float32)
    y = (x @ proj).argmax(axis=1).astype(np.int64)
    return Dataset(
        name="synthetic",
        split="default",
        train=Split(x[:n_train], y[:n_train]),
        val=Split(x[n_train:], y[n_train:]),
        test=None,
        mean=0.0,
        std=1.0,
        source="synthetic",
        digest="synthetic",
        num_classes=classes,
    )


@pytest.fixture
def small_data() -> Dataset:
    return synthetic_dataset()


@pytest.fixture(autouse=True)
def fresh_dataset_cache():
    """Each test starts without datasets loaded by an earlier test in this process (mlp_core.data keeps them)."""
    clear_dataset_cache()
    yield
    clear_dataset_cache()
