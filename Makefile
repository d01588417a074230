# Postflow: `make run` sets up and runs web + worker on the embedded default; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export DJANGO_SETTINGS_MODULE := config.settings

.PHONY: run setup deps lock cxx ffmpeg rtmp chromium espeak test test-unit lint bench loadtest prod-up prod-down prod-manage clean

# requirements/dev.txt pins every package (pip itself too) with its hashes: a fresh machine installs
# exactly what CI tested, and nothing unpinned or altered.
$(VENV)/.deps: requirements/base.txt requirements/prod.txt requirements/dev.txt
	@$(MAKE) --no-print-directory cxx
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements/dev.txt
	@touch $@

deps: $(VENV)/.deps

# Recompile the hashed requirements/*.txt from the human lists requirements/*.in (after editing a .in,
# or after a merge that touched them). Existing pins are kept unless a .in asks for another version;
# `make lock UPGRADE=1` upgrades everything the .in files allow. dev.txt is resolved first and then
# constrains prod.txt and base.txt, so each layer pins the versions CI tested. A .txt left with merge
# conflict markers is reset to our side first (pip-compile then re-adds what the merged .in files ask).
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade)
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(VENV)/bin/pip-compile || $(PY) -m pip install --quiet "$$(grep -E '^pip-tools==' requirements/dev.in)"
	@for f in requirements/{dev,prod,base}.txt; do \
		if grep -qE '^(<<<<<<<|=======|>>>>>>>)' $$f 2>/dev/null; then \
			echo "lock: $$f has merge conflict markers: starting from our side"; \
			git checkout --ours -- $$f 2>/dev/null || rm -f $$f; fi; done
	$(PIP_COMPILE) -o requirements/dev.txt requirements/dev.in
	$(PIP_COMPILE) -c requirements/dev.txt -o requirements/prod.txt requirements/prod.in
	$(PIP_COMPILE) -c requirements/prod.txt -o requirements/base.txt requirements/base.in

# Debian's ffmpeg, installed when missing and we may (root, or passwordless sudo).
ffmpeg:
	@if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then true; \
	elif [ "$$(id -u)" = 0 ]; then echo "Installing Debian's ffmpeg..."; \
		(apt-get install -y -qq ffmpeg >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null)); \
	elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq ffmpeg >/dev/null; \
	else echo "WARNING: ffmpeg is missing and cannot be installed here (run: sudo apt-get install ffmpeg);"; \
		echo "         video and audio will fail processing until it is installed."; fi

# nginx with Debian's RTMP module, for the local livestream ingest (media/live/ingest.py supervises it;
# Debian's own nginx service is not used: without a runlevel its postinst does not start it).
RTMP_MODULE := /usr/lib/nginx/modules/ngx_rtmp_module.so
rtmp:
	@if command -v nginx >/dev/null && [ -e $(RTMP_MODULE) ]; then true; \
	elif [ "$$(id -u)" = 0 ]; then echo "Installing nginx with libnginx-mod-rtmp (livestream ingest)..."; \
		(apt-get install -y -qq libnginx-mod-rtmp >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libnginx-mod-rtmp >/dev/null)); \
	elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq libnginx-mod-rtmp >/dev/null; \
	else echo "NOTE: nginx's RTMP module is missing (sudo apt-get install libnginx-mod-rtmp):"; \
		echo "      livestream creation answers 503 livestream_unavailable until it is installed."; fi

# pdqhash (PDQ perceptual hashes) is a source package: pip builds it against numpy 2 (its build
# requirement), which needs a C++ compiler and Python's headers. Installed when missing and we may.
cxx:
	@if command -v g++ >/dev/null && $(PYTHON) -c "import sysconfig,os,sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'],'Python.h')))"; then true; \
	elif [ "$$(id -u)" = 0 ]; then echo "Installing g++ and Python headers (to build pdqhash)..."; \
		(apt-get install -y -qq g++ python3-dev >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq g++ python3-dev >/dev/null)); \
	elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq g++ python3-dev >/dev/null; \
	else echo "WARNING: g++ or Python.h is missing (sudo apt-get install g++ python3-dev): pdqhash will not build."; fi

# Debian's Chromium for the admin browser tests.
chromium:
	@if command -v chromium >/dev/null; then true; \
	elif [ "$$(id -u)" = 0 ]; then echo "Installing Debian's chromium..."; \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)); \
	elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; \
	else echo "NOTE: chromium is missing; the browser tests will be skipped (sudo apt-get install chromium)."; fi

# Debian's espeak-ng: the speech tests and benchmark synthesise voice notes with it.
espeak:
	@if command -v espeak-ng >/dev/null; then true; \
	elif [ "$$(id -u)" = 0 ]; then echo "Installing Debian's espeak-ng..."; \
		(apt-get install -y -qq espeak-ng >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null)); \
	elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq espeak-ng >/dev/null; \
	else echo "NOTE: espeak-ng is missing; the speech tests will be skipped (sudo apt-get install espeak-ng)."; fi

setup: deps ffmpeg rtmp
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
test: deps ffmpeg rtmp chromium espeak
	$(VENV)/bin/pytest
	@if $(PY) -c "import psycopg; psycopg.connect('$(PG_TEST_URL)'.rsplit('/', 1)[0] + '/postgres', connect_timeout=3)" 2>/dev/null; then \
		echo "== the unit suite on PostgreSQL"; \
		DATABASE_URL=$(PG_TEST_URL) $(VENV)/bin/pytest -m "not integration and not browser" -q; \
	elif [ -n "$$CI" ]; then echo "PostgreSQL is not reachable at $(PG_TEST_URL)"; exit 1; \
	else echo "NOTE: PostgreSQL not reachable at $(PG_TEST_URL): skipped the PostgreSQL pass."; fi

test-unit: deps espeak
	$(VENV)/bin/pytest -m "not integration and not browser"

lint: deps
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: deps ffmpeg rtmp espeak
	$(PY) tests/benchmarks/run.py

clean:
	rm -rf var/ .pytest_cache

# --- The production topology without Docker (PostgreSQL and Redis on this machine, moto as S3) ------
PROD_DIR := var/prod
PROD_PORT ?= 8080
PROD_ENV = DEBUG=false SECRET_KEY=$${SECRET_KEY:-local-prod-$$(whoami)-not-secret} ALLOWED_HOSTS=127.0.0.1,localhost \
	SECURE_SSL_REDIRECT=false DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postflow} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/1} S3_BUCKET=postflow S3_ENDPOINT_URL=http://127.0.0.1:9000 \
	S3_ACCESS_KEY_ID=local S3_SECRET_ACCESS_KEY=local POSTFLOW_VAR_DIR=$(CURDIR)/$(PROD_DIR)/var \
	DRAMATIQ_LOG_LEVEL=INFO

# Start a process group in the background unless its pid file names a live one (so prod-up restarts
# only what died: kill a worker, run `make prod-up` again).
define start_bg
	@if [ -f $(PROD_DIR)/$(1).pid ] && kill -0 $$(cat $(PROD_DIR)/$(1).pid) 2>/dev/null; then echo "$(1): running"; \
	else setsid $(2) >> $(PROD_DIR)/$(1).log 2>&1 < /dev/null & echo $$! > $(PROD_DIR)/$(1).pid; echo "$(1): started"; fi
endef

prod-up: deps ffmpeg rtmp
	@mkdir -p $(PROD_DIR)/var
	@env $(PROD_ENV) $(PY) -m config.dbcreate
	$(call start_bg,s3,$(VENV)/bin/moto_server -H 127.0.0.1 -p 9000)
	@sleep 2; $(PY) -c "import boto3; s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:9000', region_name='us-east-1', \
		aws_access_key_id='local', aws_secret_access_key='local'); \
		s3.create_bucket(Bucket='postflow') if 'postflow' not in [b['Name'] for b in s3.list_buckets()['Buckets']] else None"
	@env $(PROD_ENV) $(PY) manage.py migrate --noinput -v0
	@env $(PROD_ENV) $(PY) manage.py ensure_demo_admin
	$(call start_bg,web,env $(PROD_ENV) $(VENV)/bin/gunicorn -c config/gunicorn_conf.py config.asgi:application -k asgi --worker-connections 4000 -b 127.0.0.1:$(PROD_PORT) -w 2)
	$(call start_bg,worker-video,env $(PROD_ENV) $(PY) manage.py rundramatiq --processes 1 --threads 1 --queues media.video)
	$(call start_bg,worker-speech,env $(PROD_ENV) $(PY) manage.py rundramatiq --processes 1 --threads 1 --queues media.speech)
	$(call start_bg,worker-default,env $(PROD_ENV) $(PY) manage.py rundramatiq --processes 1 --threads 4 --queues media.image media.audio media.urls moderation links notifications webhooks)
	$(call start_bg,scheduler,env $(PROD_ENV) $(PY) manage.py run_scheduler)
	$(call start_bg,live-ingest,env $(PROD_ENV) LIVESTREAM_RTMP_PORT=$${LIVESTREAM_RTMP_PORT:-1935} $(PY) manage.py run_live_ingest)
	@echo "Production topology at http://127.0.0.1:$(PROD_PORT)/ (logs and pids in $(PROD_DIR)/; stop with make prod-down)"

prod-down:
	@for f in $(PROD_DIR)/*.pid; do [ -f "$$f" ] && kill -TERM -- -$$(cat $$f) 2>/dev/null; rm -f "$$f"; done; echo stopped

# Manage commands against the production topology, e.g. `make prod-manage CMD="sweep_pending_media --dry-run"`.
prod-manage:
	@env $(PROD_ENV) $(PY) manage.py $(CMD)

loadtest: deps ffmpeg
	$(PY) tests/benchmarks/loadtest.py
	$(PY) tests/benchmarks/loadtest_events.py
