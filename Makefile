# Postflow: `make run` sets up and runs web + worker on the embedded default; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export DJANGO_SETTINGS_MODULE := config.settings

.PHONY: run setup venv deps ffmpeg chromium migrate test test-unit lint bench loadtest prod-up prod-down clean

$(VENV)/.deps: requirements/base.txt requirements/prod.txt requirements/dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt
	@touch $@

deps: $(VENV)/.deps

# Debian's ffmpeg, installed when missing and we may (root, or passwordless sudo).
ffmpeg:
	@if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then true; \
	elif [ "$$(id -u)" = 0 ]; then echo "Installing Debian's ffmpeg..."; \
		(apt-get install -y -qq ffmpeg >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null)); \
	elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq ffmpeg >/dev/null; \
	else echo "WARNING: ffmpeg is missing and cannot be installed here (run: sudo apt-get install ffmpeg);"; \
		echo "         video and audio will fail processing until it is installed."; fi

# Debian's Chromium for the admin browser tests.
chromium:
	@if command -v chromium >/dev/null; then true; \
	elif [ "$$(id -u)" = 0 ]; then echo "Installing Debian's chromium..."; \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)); \
	elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; \
	else echo "NOTE: chromium is missing; the browser tests will be skipped (sudo apt-get install chromium)."; fi

setup: deps ffmpeg
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	@$(PY) manage.py ensure_demo_admin

run: setup
	@echo ""
	@echo "Postflow is starting at http://$(HOST):$(PORT)/  (API: /api/v1/, docs: /api/v1/docs/, admin: /admin/)"
	$(PY) manage.py runserver $(HOST):$(PORT)

PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/postflow

# Everything on the embedded default (SQLite), including the system, fault and browser tests; then the
# unit suite again on PostgreSQL, where row locks and constraints behave as in production.
test: deps ffmpeg chromium
	$(VENV)/bin/pytest
	@if $(PY) -c "import psycopg; psycopg.connect('$(PG_TEST_URL)'.rsplit('/', 1)[0] + '/postgres', connect_timeout=3)" 2>/dev/null; then \
		echo "== the unit suite on PostgreSQL"; \
		DATABASE_URL=$(PG_TEST_URL) $(VENV)/bin/pytest -m "not integration and not browser" -q; \
	elif [ -n "$$CI" ]; then echo "PostgreSQL is not reachable at $(PG_TEST_URL)"; exit 1; \
	else echo "NOTE: PostgreSQL not reachable at $(PG_TEST_URL): skipped the PostgreSQL pass."; fi

test-unit: deps
	$(VENV)/bin/pytest -m "not integration and not browser"

lint: deps
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: deps ffmpeg
	$(PY) tests/benchmarks/run.py

clean:
	rm -rf var/ .pytest_cache
