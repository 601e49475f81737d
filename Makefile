# Wearable data pipeline — developer and operator entry points. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= data_lake
SAMPLE ?= sample_data
SAMPLE_PGDATA ?= .pgdata-sample
STAMP  := $(VENV)/.installed
# The synthetic sample always goes to an embedded server of its own, whatever database is configured.
SAMPLE_ENV := env -u DATABASE_URL -u DB_HOST -u DB_PORT -u DB_NAME -u DB_USER -u DB_PASSWORD
SAMPLE_ARGS := --pgdata $(SAMPLE_PGDATA) --data-dir $(SAMPLE)
SAMPLE_DEMO := $(SAMPLE_ENV) $(BIN)/wearable-pipeline watch --once --metrics-addr off $(SAMPLE_ARGS) \
	&& $(SAMPLE_ENV) $(BIN)/wearable-pipeline report $(SAMPLE_ARGS)

.DEFAULT_GOAL := help
.PHONY: help install test-tools run sample-demo sample-report once status report sql test test-fast test-faults lint bench sample-data clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,plot,dashboard]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with its test extras

test-tools: ## install promtool, Prometheus and Chromium (Debian packages, as root) for the tests that drive them
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then echo "test tools present"; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "not installed:$$missing (needs root and apt-get); the tests that need them skip with a reason"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

run: $(STAMP) ## run the daemon on data_lake/ (a demo on the synthetic sample first while it holds no export); Ctrl-C stops it
	@if [ -z "$$(find $(DATA) -type f -iname '*.csv' -print -quit 2>/dev/null)" ]; then \
	  echo "== $(DATA)/ holds no CSV export yet: first a demo on the synthetic sample in $(SAMPLE)/,"; \
	  echo "== loaded into a database of its own ($(SAMPLE_PGDATA)/), never mixed with your data."; \
	  ( $(SAMPLE_DEMO) ) || true; \
	  echo "== Now watching $(DATA)/ (empty): copy your exports into it and they load while this runs."; \
	fi
	$(BIN)/wearable-pipeline watch --data-dir $(DATA)

sample-demo: $(STAMP) ## load the synthetic sample into its own embedded database and print its answer
	$(SAMPLE_DEMO)

sample-report: $(STAMP) ## the engagement answer on the synthetic sample (its own database)
	$(SAMPLE_ENV) $(BIN)/wearable-pipeline report $(SAMPLE_ARGS)

once: $(STAMP) ## load everything pending in data_lake/ once, build the models, exit
	$(BIN)/wearable-pipeline watch --once --data-dir $(DATA)

status: $(STAMP) ## list the files the pipeline knows, data quality per table, and its recent runs
	$(BIN)/wearable-pipeline status --data-dir $(DATA)

report: $(STAMP) ## print the engagement answer on your data (cohort trend, users per class)
	$(BIN)/wearable-pipeline report --data-dir $(DATA)

sql: $(STAMP) ## open psql on the configured database (the embedded one included)
	$(BIN)/wearable-pipeline sql --data-dir $(DATA)

test: $(STAMP) ## run the whole test suite (TEST_DATABASE_URL if set, else an embedded PostgreSQL)
	$(BIN)/python -m pytest

test-fast: $(STAMP) ## unit tests only
	$(BIN)/python -m pytest tests/unit

test-faults: $(STAMP) ## the fault suite alone (several instances, SIGKILL, database restarts)
	$(BIN)/python -m pytest -m faults

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check watcher tests bench
	$(BIN)/ruff format --check watcher tests bench
	$(BIN)/mypy watcher

bench: $(STAMP) ## run the benchmark scripts (prints figures and ratios; takes minutes)
	$(BIN)/python -m bench.ingest

sample-data: $(STAMP) ## regenerate sample_data/ with the deterministic generator
	$(BIN)/wearable-pipeline sample-data --users 12 --days 60 --out $(SAMPLE)

clean: ## remove the virtualenv, caches and the embedded database folder
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dbt/target dbt/logs .pgdata $(SAMPLE_PGDATA)
