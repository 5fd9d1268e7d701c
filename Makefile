# VerTac — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit lint fmt bench schemas clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install VerTac with its development tools

run: $(STAMP) ## Run everything locally: NATS, PostgreSQL, services, simulator, gateway on :8000
	$(BIN)/vertac run

test: $(STAMP) ## Run unit, integration and end-to-end tests against real servers
	$(BIN)/pytest

test-unit: $(STAMP) ## Run only the fast unit tests
	$(BIN)/pytest tests/unit

lint: $(STAMP) ## ruff check, ruff format --check and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy schemas services edge

fmt: $(STAMP) ## Format and auto-fix the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) ## Benchmarks: ingest on the embedded stack, cycle analysis, alert latency (prints figures)
	$(BIN)/python -m tests.bench.ingest
	$(BIN)/python -m tests.bench.analysis
	$(BIN)/python -m tests.bench.alerts
	$(BIN)/python -m tests.bench.edge

schemas: $(STAMP) ## Re-export JSON Schemas and the AsyncAPI document into schemas/json/
	$(BIN)/vertac schemas export

clean: ## Remove the virtualenv and caches (keeps .vertac data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
