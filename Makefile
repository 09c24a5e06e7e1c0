# Two commands for a fresh clone: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## run: the coordinator demo (a slow sink, feedback events printed as levels change)
run: $(STAMP)
	$(BIN)/python examples/run_coordinator_demo.py

## test: the whole suite, with coverage of src/ (fails under 85 %)
test: $(STAMP)
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=85

## lint: ruff (lint + format check) and mypy --strict
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: coordinator throughput against a naive asyncio.Queue baseline
bench: $(STAMP)
	$(BIN)/python bench/coordinator.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .mds
