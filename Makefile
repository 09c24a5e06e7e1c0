# Two commands for a fresh clone: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two stamps: `run` and the demos need the service's dependencies only; test, lint
# and bench add the dev tools on top. pip shows its progress (the first `make run`
# downloads for a minute or more).
RUNTIME := $(VENV)/.runtime
STAMP   := $(VENV)/.installed
PIP     := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: run demo producer-demo test reliability lint format bench clean

$(RUNTIME): pyproject.toml
	@echo "==> creating $(VENV) and installing the service's dependencies (first time: a minute or two)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --progress-bar on --upgrade pip
	$(PIP) install --progress-bar on -e .
	@touch $(RUNTIME)
	@echo "==> $(VENV) ready to run"

$(STAMP): $(RUNTIME)
	@echo "==> installing the dev tools (pytest, ruff, mypy...)"
	$(PIP) install --progress-bar on -e '.[dev]'
	@touch $(STAMP)

## run: the service on http://127.0.0.1:8081 (embedded PostgreSQL unless DATABASE_URL is set)
run: $(RUNTIME)
	$(BIN)/mds-store serve

## demo: the coordinator demo (a slow sink, feedback events printed as levels change)
demo: $(RUNTIME)
	$(BIN)/python examples/run_coordinator_demo.py

## producer-demo: the store's ceiling (raw producers: soft/hard/ok), then default clients against it (needs `make run`)
producer-demo: $(RUNTIME)
	$(BIN)/python examples/producer_demo.py

## test: the whole suite, with coverage of src/ (fails under 85 %)
test: $(STAMP)
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=85

## reliability: the fault suite (tests/reliability, ~4 min; not part of `make test`), then
## docs/reliability.md's table rewritten from the figures it measured (also when it fails)
RELIABILITY_RESULTS := .mds/reliability
reliability: $(STAMP)
	rm -rf $(RELIABILITY_RESULTS)
	MDS_RELIABILITY_RESULTS=$(RELIABILITY_RESULTS) $(BIN)/python -m pytest tests/reliability; \
	status=$$?; \
	$(BIN)/python scripts/reliability_report.py $(RELIABILITY_RESULTS) docs/reliability.md; \
	exit $$status

## lint: ruff (lint + format check), mypy --strict, import layers, k8s manifests, Containerfile
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/kubernetes-validate --quiet --strict $(filter-out k8s/kustomization.yaml,$(wildcard k8s/*.yaml))
	$(BIN)/hadolint Containerfile

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: coordinator throughput; /healthz against a trivial route
bench: $(STAMP)
	$(BIN)/python bench/coordinator.py
	$(BIN)/python bench/health.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .mds
