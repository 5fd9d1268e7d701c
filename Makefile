# VerTac — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
WEB    := services/gateway/web
WEBDEP := $(WEB)/node_modules/.installed
PEERS  := tests/peers
PEERDEP := $(PEERS)/node_modules/.installed
APP    := services/gateway/static/app/index.html
WEBSRC := $(wildcard $(WEB)/src/*) $(WEB)/index.html $(WEB)/vite.config.ts $(WEB)/tsconfig.json

.PHONY: help install web run test test-unit test-web lint docs fmt bench bench-browser bench-viewers bench-plant bench-historian bench-federation chaos schemas clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml services/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@# a Sparkplug B encoder of another project for the tests; its MQTT client pins paho-mqtt<2
	@# (aiomqtt needs >=2) and the tests use only its encoder
	$(BIN)/pip install --quiet --no-deps "pysparkplug==0.6.1"
	touch $(STAMP)

install: $(STAMP) $(WEBDEP) $(PEERDEP) ## Create .venv and node_modules with VerTac and its development tools

$(PEERDEP): $(PEERS)/package.json $(PEERS)/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js >= 20) is needed for the protocol peers of the tests" >&2; exit 2; }
	cd $(PEERS) && npm ci --no-audit --no-fund
	touch $(PEERDEP)

$(WEBDEP): $(WEB)/package.json $(WEB)/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js >= 20) is needed to build the dashboard" >&2; exit 2; }
	cd $(WEB) && npm ci --no-audit --no-fund
	touch $(WEBDEP)

$(APP): $(WEBDEP) $(WEBSRC)
	cd $(WEB) && npm run --silent build

web: $(APP) ## Build the dashboard (TypeScript, Vite) into services/gateway/static/app

run: $(STAMP) $(APP) ## Run everything locally: NATS, PostgreSQL, services, simulator, gateway on :8000
	$(BIN)/vertac run

test: $(STAMP) $(APP) $(PEERDEP) ## Run unit, integration, end-to-end and browser tests against real servers
	cd $(WEB) && npm test --silent
	$(BIN)/pytest

test-web: $(WEBDEP) ## Only the dashboard's unit tests (Vitest)
	cd $(WEB) && npm test --silent

test-unit: $(STAMP) ## Run only the fast unit tests
	$(BIN)/pytest tests/unit

lint: $(STAMP) $(WEBDEP) ## ruff check, ruff format --check, mypy --strict, tsc and the docs site (strict)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy schemas services edge
	cd $(WEB) && npm run --silent typecheck
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

docs: $(STAMP) ## Build the docs site (MkDocs, Material) into site/ and serve it on :8001 with live reload
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

fmt: $(STAMP) ## Format and auto-fix the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) $(APP) ## Benchmarks: ingest, analysis, alerts, edge, browser, viewers, a whole plant, historian, sites and central, auth (prints figures)
	$(BIN)/python -m tests.bench.ingest
	$(BIN)/python -m tests.bench.analysis
	$(BIN)/python -m tests.bench.alerts
	$(BIN)/python -m tests.bench.edge
	$(BIN)/python -m tests.bench.browser
	$(BIN)/python -m tests.bench.viewers
	$(BIN)/python -m tests.bench.plant
	$(BIN)/python -m tests.bench.historian
	$(BIN)/python -m tests.bench.federation
	$(BIN)/python -m tests.bench.auth

bench-federation: $(STAMP) ## Only the sites-and-central benchmark (catch-up after an outage, site frame to central viewer)
	$(BIN)/python -m tests.bench.federation

bench-viewers: $(STAMP) ## Only the viewer benchmark (1,000-10,000 WebSocket viewers; needs Node.js)
	$(BIN)/python -m tests.bench.viewers

bench-historian: $(STAMP) ## Only the historian benchmark (a day of 16 sensors x 1 kHz in PostgreSQL, against VictoriaMetrics)
	$(BIN)/python -m tests.bench.historian

bench-plant: $(STAMP) ## Only the plant benchmark (machines x 16 sensors x 100 Hz, every service at work)
	$(BIN)/python -m tests.bench.plant

chaos: $(STAMP) ## Fault injection under load: kill -9, outages, replicas, a 3-node cluster (prints the table)
	$(BIN)/python -m tests.chaos

bench-browser: $(STAMP) $(APP) ## Only the browser benchmark (fps and publish-to-paint latency)
	$(BIN)/python -m tests.bench.browser

schemas: $(STAMP) ## Re-export JSON Schemas and the AsyncAPI document into schemas/json/
	$(BIN)/vertac schemas export

clean: ## Remove the virtualenv and caches (keeps .vertac data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(WEB)/node_modules services/gateway/static/app
