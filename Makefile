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
.PHONY: help install lock container-engine test-tools run sample-demo sample-report once status report sql test test-fast test-faults lint bench sample-data clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP) ## create .venv from requirements-dev.lock (every package pinned and hashed) and the package, editable

# The lock files: requirements-dev.lock (every extra: make install, CI), requirements.lock (the
# service image) and requirements-embedded.lock (the image with WITH_EMBEDDED=true). The two
# smaller ones are constrained by the first, so all three agree on every version they share.
# One universal resolution (any platform, Python 3.11 and up) by uv, with the hash of every file.
LOCK := $(BIN)/uv pip compile pyproject.toml --group build --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command "make lock" --system-certs --quiet

lock: $(STAMP) ## update the lock files from pyproject.toml (after changing a dependency; --upgrade-package NAME via LOCK_ARGS)
	$(LOCK) --all-extras $(LOCK_ARGS) -o requirements-dev.lock
	$(LOCK) -c requirements-dev.lock -o requirements.lock
	$(LOCK) --extra embedded -c requirements-dev.lock -o requirements-embedded.lock

container-engine: ## install and start Docker's engine (Debian's docker.io and debootstrap, as root) for the image tests
	@if docker info >/dev/null 2>&1; then echo "container engine running"; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "no container engine (starting one needs root and apt-get); the image tests skip with a reason"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then \
			apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null; \
		fi; \
		nohup dockerd >/var/log/dockerd.log 2>&1 & \
		for i in $$(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done; \
		if docker info >/dev/null 2>&1; then echo "container engine started"; \
		else echo "dockerd did not start (see /var/log/dockerd.log); the image tests skip with a reason"; fi; \
	fi

# Azurite (Azure's storage emulator, an npm package) goes to the user's cache folder, outside the
# repository; the tests look for it there (tests/cloud_emulators.py) and skip with a reason without it.
TOOLS_CACHE ?= $${XDG_CACHE_HOME:-$$HOME/.cache}/wearable-pipeline
AZURITE_VERSION := 3.35.0

test-tools: ## install promtool, Prometheus, Chromium (Debian packages, as root) and Azurite (npm) for the tests that drive them
	@dir="$(TOOLS_CACHE)/azurite"; \
	if [ -x "$$dir/node_modules/.bin/azurite-blob" ] && grep -q '"version": "$(AZURITE_VERSION)"' "$$dir/node_modules/azurite/package.json"; then \
		echo "azurite $(AZURITE_VERSION) present"; \
	elif ! command -v npm >/dev/null 2>&1; then \
		echo "azurite not installed (needs node and npm); the Azure tests skip with a reason"; \
	else \
		mkdir -p "$$dir" && npm install --prefix "$$dir" --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION) >/dev/null \
		&& echo "azurite $(AZURITE_VERSION) installed in $$dir"; \
	fi
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
	$(BIN)/mypy watcher tests bench

bench: $(STAMP) ## run the benchmark scripts (prints figures and ratios; takes minutes)
	$(BIN)/python -m bench.ingest

sample-data: $(STAMP) ## regenerate sample_data/ with the deterministic generator
	$(BIN)/wearable-pipeline sample-data --users 12 --days 60 --out $(SAMPLE)

clean: ## remove the virtualenv, caches and the embedded database folder
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dbt/target dbt/logs .pgdata $(SAMPLE_PGDATA)
