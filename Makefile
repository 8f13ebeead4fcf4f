# Everyday commands. `make run` and `make test` are the README's Quickstart.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run demo worker test test-pythons lint format docs bench clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(VENV)/.runtime $@

HOST ?= 127.0.0.1
PORT ?= 8000

## Development server: DEBUG on, embedded defaults (SQLite, in-memory layer), the demo user, on
## 127.0.0.1:8000 (`make run PORT=8001`). Production: docs/production.md.
run: $(VENV)/.runtime
	DEBUG=true $(PY) manage.py serve --host $(HOST) --port $(PORT)

## In a second terminal beside `make run`: drive the server through all eight event types,
## printing each REST call and each event its socket receives (works on every run).
demo: $(VENV)/.runtime
	$(PY) manage.py demo --url http://$(HOST):$(PORT)

## Run background jobs from the database queue (production: TASKS_BACKEND=database everywhere).
worker: $(VENV)/.runtime
	TASKS_BACKEND=database $(PY) manage.py db_worker

## Install what the tests need and run them (PostgreSQL too when DATABASE_URL is set), in
## PYTEST_WORKERS processes: many tests wait on servers and sockets, so 3 keep 2 cores busy.
## Each test file runs on one worker, so a module's shared fixtures (the benchmark run) are made
## once. A worker that dies ends the run: pytest-xdist 3.8 can hang when it replaces one under
## file scheduling (its issue 1323).
PYTEST_WORKERS ?= 3
test: $(VENV)/.dev
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --max-worker-restart 0 $(PYTEST_ARGS)

## The test command on Python 3.12 and 3.13 too (a venv each; install + a smoke subset).
test-pythons:
	bash .ci/pythons

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## The documentation site (docs/, mkdocs.yml) into site/; strict: a broken link or anchor fails.
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

## Every benchmark scenario against ours, the stock consumer and the floor, then the two runs
## issue 15's goals need beyond it: the whole system with three unpinned publishers, and one
## event to 5,000 sockets. Each run ends with the goals it judged (docs/performance.md).
bench: $(VENV)/.dev
	$(PY) -m bench all $(BENCH_ARGS)
	$(PY) -m bench throughput --publishers 3 --publisher-cpu any --rates 1000,1500,2000
	$(PY) -m bench fanout --fanout-sockets 5000 --compare-stock

clean:
	rm -rf $(VENV) .venv-3.* .pytest_cache .ruff_cache db.sqlite3 site
