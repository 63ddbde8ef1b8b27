# megahub developer workflow. `make run` and `make test` install whatever is missing.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PY := .venv/bin/python
PG_URL ?= postgres://postgres@localhost:5432/megahub
AMQP_URL ?= amqp://guest:guest@localhost:5672//
# Test runs need no secrets of their own; real deployments set SECRET_KEY (docs/production.md).
TEST_ENV = SECRET_KEY=$${SECRET_KEY:-test-only-secret-key-not-for-any-deployment} \
  DATABASE_URL=$${DATABASE_URL:-$(PG_URL)} CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$(AMQP_URL)}

.PHONY: help install install-runtime run migrate test test-outage test-fast coverage lint fmt bench loadtest worker \
  system-worker beat web consume check-services up down ps logs health clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(UV):
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

# Two install modes, one stamp each. The development mode (`make install`, the test, lint and
# bench targets) has every dependency group; the runtime mode (`make run` and the process
# targets) installs the runtime dependencies only (no test or load tools). The runtime sync is
# --inexact: it removes nothing, so switching between `make run` and `make test` costs no
# reinstall, and a development install counts as a runtime one. Dependencies are byte-compiled
# once here: where PYTHONDONTWRITEBYTECODE is set, every process (each worker, beat and server
# a test starts) would otherwise compile its imports again (about 0.8 s per process start).
.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode
	@touch $@ .venv/.synced-runtime

.venv/.synced-runtime: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --no-dev --inexact --compile-bytecode
	@touch $@

install: .venv/.synced ## create the virtualenv from uv.lock (with the dev tools)

install-runtime: .venv/.synced-runtime ## the virtualenv with the runtime dependencies only (make run)

migrate: install-runtime ## apply database migrations
	$(PY) manage.py migrate --noinput

# Developer targets run with DEBUG on unless told otherwise (no SECRET_KEY needed locally).
run migrate web worker system-worker beat consume: export DEBUG ?= 1
# ... and with the demo task types (docs/task-types.md); production leaves them off.
run web worker system-worker beat consume: export MEGAHUB_DEMO_TASK_TYPES ?= 1
run: install-runtime migrate ## the whole stack (web, brand and system workers, beat); demo credentials printed once it answers
	@mkdir -p .run
	$(PY) manage.py seed_demo > .run/demo-banner.txt
	DEMO_BANNER=.run/demo-banner.txt bin/run-stack

web: install-runtime ## the web process alone
	$(PY) manage.py runserver 127.0.0.1:$${PORT:-8000}

consume: install-runtime ## the consumer of the megahub.task_requests queue
	$(PY) manage.py consume_task_requests

worker: install-runtime ## the brand worker (queues default and long)
	.venv/bin/celery -A megahub worker --loglevel INFO -n brand@%h \
	  -Q $${CELERY_QUEUE_PREFIX}default,$${CELERY_QUEUE_PREFIX}long

system-worker: install-runtime ## the system worker (the platform's loops: queue system)
	.venv/bin/celery -A megahub worker --loglevel INFO -n system@%h -Q $${CELERY_QUEUE_PREFIX}system

beat: install-runtime ## Celery beat (platform periodic work)
	.venv/bin/celery -A megahub beat --loglevel INFO --pidfile=

check-services: install
	@$(TEST_ENV) $(PY) manage.py check_services --require-postgres --require-rabbitmq

# The project's own modules are byte-compiled before a run (up-to-date files are skipped).
APP_MODULES := megahub task_core task_monitoring task_persistence task_scheduling tests bench

test: install check-services ## the whole suite against real PostgreSQL and RabbitMQ
	@$(PY) -m compileall -q $(APP_MODULES) >/dev/null
	$(TEST_ENV) $(PY) -m pytest -n $${PYTEST_WORKERS:-2} --dist loadgroup -m "not broker_outage" \
	  $(PYTEST_ARGS)
	@# Tests that stop RabbitMQ itself run alone, after the others (not when PYTEST_ARGS
	@# narrows the run: `make test-outage` runs them on demand).
	@if [ -z "$(PYTEST_ARGS)" ]; then $(MAKE) --no-print-directory test-outage; fi

test-outage: install check-services ## only the broker_outage tests (stop RabbitMQ or change its settings)
	$(TEST_ENV) $(PY) -m pytest -p no:xdist -m broker_outage -q

# The inner loop leaves out what needs real processes and the schemathesis property runs (the
# largest share of its time); `make test` runs them all. FAST_MARKERS="not integration and not
# chaos" puts the property runs back on SQLite.
FAST_MARKERS ?= not integration and not chaos and not schemathesis
test-fast: install ## unit and API tests on SQLite, no broker (no integration tests, no schemathesis runs), 2 processes
	$(TEST_ENV) DATABASE_URL=sqlite:///:memory: CELERY_BROKER_URL=memory:// \
	  $(PY) -m pytest -n $${PYTEST_WORKERS:-2} --dist loadgroup -m "$(FAST_MARKERS)" \
	  $(PYTEST_ARGS)

coverage: install check-services ## `make test` with coverage: terminal report and htmlcov/index.html
	$(TEST_ENV) $(PY) -m pytest -n $${PYTEST_WORKERS:-2} --dist loadgroup -m "not broker_outage" \
	  --cov --cov-report=term-missing:skip-covered --cov-report=html $(PYTEST_ARGS)
	@echo "HTML report: htmlcov/index.html"

lint: install ## ruff lint + format check, import contracts, migrations up to date
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	DEBUG=1 $(PY) manage.py makemigrations --check --dry-run

fmt: install ## format and autofix
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

# `make bench BENCH_SIZE=small`: small sizes, a smoke run (bench/run.py --quick).
BENCH_SIZE ?= full
bench: install ## benchmarks beside their peers (docs/benchmarks.md; ~45 min; BENCH_SIZE=small ~20 min; BENCH_ARGS="--only x,y")
	@case "$(BENCH_SIZE)" in full|small) ;; *) echo "BENCH_SIZE is full or small" >&2; exit 2;; esac
	$(TEST_ENV) $(PY) bench/run.py $(if $(filter small,$(BENCH_SIZE)),--quick) $(BENCH_ARGS)

# Load test knobs: `make loadtest LOAD_USERS=20 LOAD_DURATION=60`.
LOAD_USERS ?= 50
LOAD_DURATION ?= 120
LOAD_SPAWN_RATE ?= 10
LOAD_WEB_WORKERS ?= 3
LOAD_WORKER_CONCURRENCY ?= 2

loadtest: install check-services ## locust load test on database megahub_load (not in make test; docs/loadtest.md)
	$(TEST_ENV) $(PY) bench/loadtest/run.py --users $(LOAD_USERS) --duration $(LOAD_DURATION) \
	  --spawn-rate $(LOAD_SPAWN_RATE) --web-workers $(LOAD_WEB_WORKERS) \
	  --worker-concurrency $(LOAD_WORKER_CONCURRENCY)

# --- the compose stack (docker-compose.yml; needs Docker with the compose plugin) ---------------
# `make up SERVICES="postgres rabbitmq"` starts only those; `make logs SERVICES=web` narrows.
COMPOSE ?= docker compose
SERVICES ?=
HEALTH_HOST ?= localhost
HEALTH_PORT ?= $(or $(WEB_PORT),8000)
HEALTH_URL ?= http://$(HEALTH_HOST):$(HEALTH_PORT)/health/ready/

up: ## build and start the compose stack in the background (http://localhost:8000)
	$(COMPOSE) up -d --build $(SERVICES)

down: ## stop and remove the stack's containers (data volumes kept; DOWN_ARGS=-v drops them)
	$(COMPOSE) down $(DOWN_ARGS)

ps: ## the stack's containers and their health
	$(COMPOSE) ps

logs: ## follow the stack's logs (last 200 lines of each service first)
	$(COMPOSE) logs -f --tail=200 $(SERVICES)

health: ## GET /health/ready/ of the running stack; exits non-zero unless ready
	@python3 bin/health-check "$(HEALTH_URL)"

clean:
	rm -rf .run staticfiles .pytest_cache htmlcov .coverage .coverage.*
