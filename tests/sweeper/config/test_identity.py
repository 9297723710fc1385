"""What identifies a run: config_hash and config_hash_noseed of composed configs, and the run name."""
from __future__ import annotations

from omegaconf import OmegaConf

from sweeper.config.identity import effective_hidden_sizes, legacy_hashes, run_hashes, run_name

from ..sweeper_helpers import compose_cfg

# config_hash of `data=digits trainer.epochs=1 model.width=16` at 2 BLAS threads, as release 0.1.0 tagged it
LEGACY_WIDTH16_SGD = "078289764e6fbef167b39ab80579aae0f8bd2df524bec48483d3ed4b71766269"


def hashes(overrides, threads=1):
    container = OmegaConf.to_container(compose_cfg(overrides), resolve=True, enum_to_str=True)
    return run_hashes(container, threads)


def test_hash_ignores_tracking_and_labels_but_not_training_settings():
    base = hashes(["experiment=task3c"])
    assert hashes(["experiment=task3c", "name=other", "tracking.uri=sqlite:////tmp/x.db",
                   "tracking.experiment_name=elsewhere", "tracking.skip_finished=false"]) == base
    assert hashes(["experiment=task3c", "optimizer.lr=0.05"])[0] != base[0]
    assert hashes(["experiment=task3c", "trainer.epochs=2"])[0] != base[0]


def test_hash_identifies_equal_models_and_groups_seeds():
    assert hashes(["experiment=task3c"]) == hashes(["experiment=task3c", "model.hidden_sizes=[64]"])
    assert hashes(["experiment=task4a"]) == hashes(["experiment=task3c", "model.width=32"])
    seed0, seed1 = hashes(["trainer.seed=0"]), hashes(["trainer.seed=1"])
    assert seed0[0] != seed1[0] and seed0[1] == seed1[1]


def test_runs_that_train_the_same_thing_hash_alike_whatever_optimizer_preset_named_them():
    """optimizer=sgd with momentum 0.9 and lr 0.02 trains exactly what optimizer=momentum trains."""
    assert hashes(["optimizer=sgd", "optimizer.momentum=0.9", "optimizer.lr=0.02"]) == hashes(["optimizer=momentum"])
    assert hashes(["experiment=task3c", "optimizer=sgd", "optimizer.momentum=0.9", "optimizer.lr=0.02"]) == \
        hashes(["experiment=task3c"])


def test_hash_holds_the_effective_blas_thread_count():
    """null (cores / workers) and an explicit count hash alike when the effective count is equal, and differ when
    it is not: the thread count changes the bits, so a run at 2 threads is not a finished run at 1 thread."""
    assert hashes([], 1) == hashes(["trainer.blas_threads=1"], 1)
    assert hashes([], 1)[0] != hashes([], 2)[0] and hashes([], 1)[1] != hashes([], 2)[1]
    assert hashes(["trainer.seed=1"], 1)[1] == hashes([], 1)[1]


def test_legacy_hashes_are_those_of_release_0_1_0():
    """Release 0.1.0 hashed the optimizer's label too; these are its hashes of the defaults at 2 threads (computed
    by that release's code path, the fixture tests/fixtures/store_v0.1.0.db.gz holds runs tagged with them)."""
    container = OmegaConf.to_container(compose_cfg(["data=digits", "trainer.epochs=1", "model.width=16"]),
                                       resolve=True, enum_to_str=True)
    old = legacy_hashes(container, 2)
    assert len(old) == 2 and run_hashes(container, 2)[0] not in old
    assert LEGACY_WIDTH16_SGD in old


def test_the_engine_is_hashed_and_a_solo_hash_is_unchanged():
    """A population member's bits differ from a solo run's, so its hash does; the solo hash is the one of before."""
    container = OmegaConf.to_container(compose_cfg(["data=digits", "trainer.epochs=1", "model.width=16"]),
                                       resolve=True, enum_to_str=True)
    solo = run_hashes(container, 2)
    assert run_hashes(container, 2, None) == solo
    assert solo[0] == "6f6b817de6a7c551bcc45fd8760b361474187734272f7083933f37f2d0c0cdf1"  # as main tagged it before
    member = run_hashes(container, 2, "population")
    assert member[0] != solo[0] and member[1] != solo[1]
    seed1 = OmegaConf.to_container(compose_cfg(["data=digits", "trainer.epochs=1", "model.width=16", "trainer.seed=1"]),
                                   resolve=True, enum_to_str=True)
    assert run_hashes(seed1, 2, "population")[1] == member[1]  # seeds of one member config still group


def test_effective_hidden_sizes_and_run_name():
    assert effective_hidden_sizes({"hidden_sizes": None, "width": 32, "depth": 3}) == (32, 32, 32)
    assert effective_hidden_sizes({"hidden_sizes": [128, 32], "width": 7, "depth": 1}) == (128, 32)
    assert run_name("task3c", ["experiment=task3c", "model.hidden_sizes=[128]", "tracking.uri=x",
                               "hydra/launcher=joblib"]) == "task3c hidden_sizes=[128]"


def test_the_config_label_shows_a_sampled_float_with_4_significant_digits():
    from sweeper.config.identity import config_label

    label = config_label("task3c", ["optimizer.lr=0.05873669160363899", "model.width=64", "trainer.seed=3"],
                         "0123456789abcdef")
    assert label == "task3c lr=0.05874 width=64 (01234567)"


def test_a_sweep_run_name_leads_with_the_swept_values_seed_last_then_the_preset():
    from sweeper.config.identity import config_label, swept_keys

    jobs = [["data=digits", "trainer.seed=0", "model.width=128", "model.depth=2", "optimizer.lr=0.05873669160363899"],
            ["data=digits", "trainer.seed=1", "model.width=64", "model.depth=2", "optimizer.lr=0.1"]]
    swept = swept_keys(jobs)
    assert swept == ["trainer.seed", "model.width", "optimizer.lr"]  # depth and data are the same in every job
    assert run_name("task3c", jobs[0], swept) == "width=128 lr=0.05874 seed=0 task3c data=digits depth=2"
    # the group label of the UI view: the same lead, without the seed
    assert config_label("task3c", jobs[0], "0123456789abcdef", swept) == "width=128 lr=0.05874 task3c data=digits " \
                                                                         "depth=2 (01234567)"
    # a swept preset leads as the experiment's name; a single run (nothing swept) keeps its name, floats whole
    presets = [["+experiment=task2c", "model.width=16"], ["+experiment=task3a", "model.width=32"]]
    assert run_name("task3a", presets[1], swept_keys(presets)) == "task3a width=32"
    assert run_name("task3c", jobs[0]) == "task3c data=digits seed=0 width=128 depth=2 lr=0.05873669160363899"
    # every job of a grid gets its own name
    grid = [[f"model.width={w}", f"trainer.seed={s}", "data=digits"] for w in (8, 16) for s in (0, 1)]
    assert len({run_name("default", job, swept_keys(grid)) for job in grid}) == 4
