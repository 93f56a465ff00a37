# Two commands matter: `make demo` and `make test`. Every target builds or refreshes its own
# virtualenv under .local/venv from the pinned requirements; nothing is installed by hand.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .local/venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCALE ?= 1
DAYS ?= 60
SEED ?= 42
# tests that exercise the SQL itself; `make test` runs them on every PostgreSQL the wheel ships
SQL_TESTS = $(wildcard tests/test_*_golden.py) tests/test_bad_input.py tests/test_registry.py tests/test_seed.py \
	tests/test_reader_role.py tests/test_partitions.py tests/test_metrics_api.py
# PostgreSQL versions installed from Debian (/usr/lib/postgresql/<v>), other than the wheel's 16 and 18
SYSTEM_PG_VERSIONS = $(filter-out 16 18,$(patsubst /usr/lib/postgresql/%/bin/postgres,%,$(wildcard /usr/lib/postgresql/*/bin/postgres)))

export AIRFLOW_HOME ?= $(CURDIR)/.local/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: venv demo test test-airflow lint dag run migrate seed warehouse bench bench-explain catalog docs constraints clean \
	superset test-superset superset-constraints

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check \
		-r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(STAMP)

demo: venv ## seed the embedded warehouse, run every domain DAG for 7 days, then the fan-in
	$(BIN)/python -m metrics_layer.cli demo --scale $(SCALE) --days $(DAYS) --seed $(SEED)

test: venv ## the whole suite on PostgreSQL 18, then the SQL-level tests on 16 and any Debian-installed version
	$(BIN)/python -m pytest
	@for v in 16 $(SYSTEM_PG_VERSIONS); do \
		echo "== SQL-level tests on PostgreSQL $$v"; \
		METRICS_TEST_PG_VERSION=$$v $(BIN)/python -m pytest -q $(SQL_TESTS) || exit 1; \
	done
	@test -n "$(SYSTEM_PG_VERSIONS)" || echo "note: no Debian PostgreSQL (e.g. postgresql-15) installed; SQL tested on 16 and 18 only"

test-airflow: venv ## the DAGs under a real Airflow scheduler, api-server, dag-processor and triggerer (a few minutes)
	$(BIN)/python -m pytest tests_scheduler

SUPERSET_PORT ?= 8088
superset: venv ## a local Superset (own virtualenv, SQLite metadata) with the bundle on the demo warehouse
	$(BIN)/python -m metrics_layer.cli superset --port $(SUPERSET_PORT)

test-superset: venv ## the bundle in a fresh Superset: every chart's data, the four dashboards in headless Chromium
	$(BIN)/python -m pytest tests_superset

superset-constraints: ## re-pin constraints-superset.txt from .local/superset-venv
	(echo "# pip freeze of .local/superset-venv (make superset-constraints); see requirements-superset.txt"; \
		.local/superset-venv/bin/pip freeze --disable-pip-version-check) > constraints-superset.txt

lint: venv ## ruff (with Airflow's AIR rules) and sqlfluff
	$(BIN)/ruff check src dags plugins tests tests_scheduler tests_superset bench
	$(BIN)/sqlfluff lint sql/ --disable-progress-bar

dag: venv ## make dag DAG=<dag_id> DATE=<YYYY-MM-DD>: one DAG, one date (Airflow retries off)
	@test -n "$(DAG)" -a -n "$(DATE)" || { echo "usage: make dag DAG=<dag_id> DATE=<YYYY-MM-DD>"; exit 2; }
	$(BIN)/python -m metrics_layer.cli dag $(DAG) $(DATE)

run: venv ## make run DATE=<YYYY-MM-DD> [END=<YYYY-MM-DD>] [PER_DATE=1]: every domain DAG for the dates (one run per domain, or per date), then the fan-in
	@test -n "$(DATE)" || { echo "usage: make run DATE=<YYYY-MM-DD> [END=<YYYY-MM-DD>] [PER_DATE=1]"; exit 2; }
	$(BIN)/python -m metrics_layer.cli run $(DATE) $(END) $(if $(PER_DATE),--per-date)

migrate: venv ## apply the layer's schema (DDL) to the warehouse now
	$(BIN)/python -m metrics_layer.cli migrate

seed: venv ## make seed SCALE=<number> DAYS=<n> [SEED=<int>]: load synthetic source data
	$(BIN)/python -m metrics_layer.cli seed --scale $(SCALE) --days $(DAYS) --seed $(SEED)

warehouse: venv ## start the embedded warehouse and print how to connect
	$(BIN)/python -m metrics_layer.cli warehouse

catalog: venv ## regenerate docs/metrics.md from the registry
	$(BIN)/python -m metrics_layer.cli catalog

docs: venv ## Great Expectations Data Docs of the last 7 published dates of every table (.local/data_docs/index.html)
	$(BIN)/python -m metrics_layer.cli docs

BENCH_DAYS ?= 365
bench: venv ## the whole daily job against the naive design and the targets: make bench SCALE=1 (bench/results/latest.json)
	$(BIN)/python bench/bench.py --scale $(SCALE) --days $(BENCH_DAYS) $(if $(REUSE),--reuse) $(if $(RESUME),--reuse --resume)

bench-explain: venv ## after make bench SCALE=s: EXPLAIN (ANALYZE, BUFFERS) of the heaviest statements on its data
	$(BIN)/python bench/explain.py --scale $(SCALE)

constraints: venv
	$(BIN)/pip freeze --exclude-editable > constraints.txt

clean:
	rm -rf .local/airflow .local/pgdata .local/test
