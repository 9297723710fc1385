# mlp-sweeps: every target installs what it needs into .venv first (Python >= 3.10 on PATH as python3).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SWEEP  ?= task3_tricks
PORT   ?= 5000
ARGS   ?=

.PHONY: setup sweep run test test-fast soak bench ui report clean-outputs

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## The main job: a real sweep on MNIST (the course's task 3 tricks), tracked in outputs/mlflow.db.
## It ends by printing the one link that opens its comparison in the MLflow UI (started with `make ui`).
sweep: setup
	$(BIN)/mlp-sweep -m +sweep=$(SWEEP) $(ARGS)

## One run, e.g. make run ARGS="experiment=task3c trainer.epochs=5"
run: setup
	$(BIN)/mlp-sweep $(ARGS)

## The whole test suite (slow and integration tests included), as CI runs it; it ends by listing the 25 slowest
## test phases (call, setup, teardown), so CI's log shows where the time went. One pytest-xdist worker per core (at
## most 4), each test file on one worker (--dist loadfile: a file's module fixtures are made once, and the session's
## Slurm cluster, which only tests/cluster/test_slurm.py uses, is started by one worker); TEST_WORKERS=0 runs it
## in-process. (Not --dist loadgroup: with pytest 9 xdist 3.8 no longer adds the group to a test's id, so every test
## became a unit of its own.)
TEST_WORKERS ?= auto
XDIST := -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile
test: setup
	$(BIN)/python -m pytest $(XDIST) --durations=25 $(ARGS)

## Everything but the tests marked slow.
test-fast: setup
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(ARGS)

## Not part of `test`: the tests marked soak (signals, kills, timeouts, concurrent processes) 5 times, then the whole
## suite, with both cores saturated by busy loops (tests/soak.sh; SOAK_ROUNDS=n, SOAK_FULL=0 skips the suite round).
soak: setup
	PYTHON=$(BIN)/python bash tests/soak.sh

bench: setup
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_tracking.py
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/bench_population.py
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_startup.py
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_overhead.py

## The MLflow UI on the project's store (Ctrl-C to stop): one web worker, without MLflow's job runner (GenAI jobs,
## which this project never uses; it would start 7 more processes). Once it answers, it prints and opens the link to
## the latest sweep's view, in the model-training layout (MLflow only takes that layout from a link).
ui: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/python -m sweeper.tracking.views --port $(PORT) $(ARGS)

## Rebuild figures and tables from runs already in MLflow, e.g. make report ARGS="--experiment mlp-sweeps"
report: setup
	$(BIN)/mlp-sweep-report $(ARGS)

clean-outputs:
	rm -rf outputs/runs outputs/multiruns outputs/reports
