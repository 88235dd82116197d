# `make test` is the README's test command and what .ci/run calls.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install lint typecheck pytest test-faults test demo bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

install: $(BIN)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Everything but the end-to-end fault suite (tests/faults, a few minutes of process kills).
pytest: install
	$(BIN)/pytest -m "not faults"

test-faults: install
	$(BIN)/pytest -m faults

test: lint typecheck pytest test-faults

# The whole pipeline on this machine: embedded Redis, simulator, producer, workers, Flower.
demo: install
	$(BIN)/alpaca-broker demo

bench: install
	$(BIN)/python -m pip install -q -e '.[bench]' --config-settings editable_mode=compat
	$(BIN)/alpaca-broker bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
