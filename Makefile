# `make test` is the README's test command and what .ci/run calls.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install lint typecheck pytest test-faults test-chaos chaos test demo bench clean

# The locked versions, each checked against its hash (requirements/test-lock.txt, `make lock`),
# then the project itself without resolving anything again.
$(BIN)/.installed: pyproject.toml requirements/test-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements/test-lock.txt
	$(BIN)/python -m pip install -q --no-deps -e '.[test]' --config-settings editable_mode=compat
	touch $@

install: $(BIN)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Everything but the end-to-end fault suite (tests/faults, a few minutes of process kills)
# and the chaos suite (tests/chaos, seeded random fault schedules).
pytest: install
	$(BIN)/pytest -m "not faults and not chaos"

test-faults: install
	$(BIN)/pytest -m faults

# The chaos suite's CI seeds (one per Redis flavour at least), its pinned regression seeds,
# and the planted loss its checker must fail.
test-chaos: install
	$(BIN)/pytest tests/chaos -m chaos

# make chaos SEED=N [REDIS=valkey|redis6|redis7] [LENGTH=seconds] [MIX=basic|all]: replay a
# seed's schedule (SEED="N N N": three times); make chaos SEEDS=N [LENGTH=...]: a soak of N
# random seeds (120 s each by default); CUT=seconds runs only a schedule's first seconds. A
# failing seed prints its schedule and how to replay it.
CHAOS_ARGS = $(foreach seed,$(SEED),--chaos-seed $(seed)) $(if $(SEEDS),--chaos-seeds $(SEEDS)) \
	$(if $(REDIS),--chaos-redis $(REDIS)) $(if $(LENGTH),--chaos-length $(LENGTH)) \
	$(if $(MIX),--chaos-mix $(MIX)) $(if $(CUT),--chaos-cut $(CUT))
chaos: install
	$(BIN)/pytest tests/chaos -m chaos -k seeded -v $(CHAOS_ARGS)

test: lint typecheck pytest test-faults test-chaos

# The whole pipeline on this machine: embedded Redis, simulator, producer, workers, Flower.
demo: install
	$(BIN)/alpaca-broker demo

bench: install
	$(BIN)/python -m pip install -q -e '.[bench]' --config-settings editable_mode=compat
	$(BIN)/alpaca-broker bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info

# Lock files with hashes (requirements/): lock.txt (runtime: the Docker image installs it with
# --require-hashes), test-lock.txt (with the test extras) and build-lock.txt (the image's build
# backend), for Python 3.11 on Linux. Run after changing dependencies in pyproject.toml.
UV_VERSION = 0.13.10
LOCK = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform linux --custom-compile-command "make lock"
.PHONY: lock
lock: install
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)
	$(LOCK) pyproject.toml -o requirements/lock.txt
	$(LOCK) pyproject.toml --extra test -o requirements/test-lock.txt
	$(LOCK) requirements/build.in -o requirements/build-lock.txt
