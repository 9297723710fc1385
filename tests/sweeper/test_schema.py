"""Schema rejections: composition errors for typos/types/choices, range errors before any MLflow run exists."""
from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from sweeper.schema import ConfigError, validate, validate_against_dataset

from .sweeper_helpers import compose_cfg, run_cli

RANGE_ERRORS = [
    ("optimizer.lr=0", "optimizer.lr", "> 0"),
    ("optimizer.lr=-0.1", "optimizer.lr", "> 0"),
    ("optimizer.lr=inf", "optimizer.lr", "finite"),
    ("optimizer.momentum=1.0", "optimizer.momentum", "[0, 1)"),
    ("optimizer.momentum=-0.1", "optimizer.momentum", "[0, 1)"),
    ("model.hidden_sizes=[]", "model.hidden_sizes", "non-empty"),
    ("model.hidden_sizes=[64,0]", "model.hidden_sizes", ">= 1"),
    ("model.width=0", "model.width", ">= 1"),
    ("model.depth=0", "model.depth", ">= 1"),
    ("trainer.epochs=0", "trainer.epochs", ">= 1"),
    ("trainer.batch_size=0", "trainer.batch_size", ">= 1"),
    ("trainer.batch_size=20001", "trainer.batch_size", "20000 training images"),
    ("trainer.validations_per_epoch=0", "trainer.validations_per_epoch", ">= 1"),
    ("trainer.validations_per_epoch=700", "trainer.validations_per_epoch", "625 steps per epoch"),
    ("trainer.early_stopping.patience=0", "trainer.early_stopping.patience", ">= 1"),
    ("trainer.seed=-1", "trainer.seed", ">= 0"),
    ("trainer.blas_threads=0", "trainer.blas_threads", ">= 1"),
    ("data.split=default", "data", "split"),  # MNIST has no "default" split: the core's validate_data_args says so
]


@pytest.mark.parametrize("override, key, valid", RANGE_ERRORS)
def test_range_error_names_key_value_and_valid_range(override, key, valid):
    cfg = compose_cfg([override])
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert key in message and valid in message, message
    assert override.split("=", 1)[1] in message.replace("'", "").replace(" ", ""), message


def test_batch_size_checked_against_the_loaded_training_set():
    cfg = compose_cfg(["data=digits", "trainer.batch_size=2000"])
    validate(cfg)  # the digits split size is the core's business: checked once the data is loaded
    with pytest.raises(ConfigError, match=r"trainer.batch_size=2000 .* <= the 1500 training images"):
        validate_against_dataset(cfg, 1500, "digits/default")


@pytest.mark.parametrize(
    "override",
    ["model.widht=32", "trainer.epochs=ten", "model.activation=softplus", "data.name=cifar", "optimizer=adam",
     "trainer.early_stopping=5", "model.hidden_sizes=[a]"],
)
def test_composition_rejects_typos_types_and_choices(override):
    with pytest.raises(ConfigCompositionException):
        compose_cfg([override])


@pytest.mark.parametrize("override", ["+_target_=os.system", "+model._target_=os.system", "+model.widht=3",
                                      "+trainer.early_stopping.patiance=3"])
def test_keys_added_with_plus_are_rejected_before_any_run(override):
    cfg = compose_cfg([override])  # Hydra's "+" opens the struct flag, so the schema pass must catch it
    key = override[1:].split("=", 1)[0]
    with pytest.raises(ConfigError, match=f"unknown key.*{key}"):
        validate(cfg)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.widht=32", "widht"),
        ("trainer.epochs=ten", "ten"),
        ("model.activation=softplus", "improved_sigmoid"),  # the valid choices are listed
        ("+_target_=os.system", "_target_"),
        ("optimizer.lr=0", "optimizer.lr=0"),
        ("optimizer.momentum=1.5", "[0, 1)"),
        ("model.hidden_sizes=[]", "model.hidden_sizes"),
        ("trainer.early_stopping.patience=0", "patience"),
        ("+sweep=task4_width", "run it with -m"),
    ],
)
def test_cli_rejection_exits_nonzero_without_traceback_and_creates_no_run(tmp_path, store, override, expected):
    proc = run_cli([override, f"tracking.uri={store}"], tmp_path)
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    # the store is opened only after validation: no database, hence no run
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    "grid, expected",
    [
        (["optimizer.lr=0.1,0", "model.width=4,8"], "2 of 4 jobs of this sweep are invalid"),
        (["model.widht=4,8"], "widht"),
        (["+sweep=width_depth", "model.depth=1,0"], "model.depth=0"),
    ],
)
def test_invalid_sweep_starts_no_job_and_creates_no_run(tmp_path, store, grid, expected):
    proc = run_cli(["-m", "data=digits", "trainer.epochs=1", *grid, f"tracking.uri={store}",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "Launching" not in proc.stdout + proc.stderr
    assert not (tmp_path / "mlflow.db").exists()
