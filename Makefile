# Everything starts from a fresh machine with Python 3.11+ and the package registries.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run up down status services test test-fast test-faults lint bench bench-admin bench-reconcile bench-e2e bench-api bench-stages bench-profile bench-poll browser screenshots reset clean

$(STAMP): requirements.txt package-lock.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# The admin's front-end files (Chart.js), served from the project's own static files.
	npm ci --no-audit --no-fund --silent
	touch $(STAMP)

install: $(STAMP)

## Prepare the services and the database, then run the Procfile with honcho in the foreground; Ctrl-C stops all of it.
run: install
	$(PY) -m exchange.stack run

## The same with honcho in the background (pid in .run/honcho.pid); returns once /readyz answers 200.
up: install
	$(PY) -m exchange.stack up

## Stop everything `make up` or `make run` started.
down:
	@if [ -x $(PY) ]; then $(PY) -m exchange.stack down; fi

status: install
	$(PY) -m exchange.stack status

services: install
	$(PY) -m exchange.stack services

# Headless Chromium for the admin's browser tests, from Debian's packages.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium for the browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

## Copy the browser tests' latest screenshots (test-results/screenshots/) into docs/screenshots/.
screenshots:
	@ls test-results/screenshots/*.png >/dev/null 2>&1 || { echo "no screenshots yet: run the browser tests (pytest tests/browser)"; exit 1; }
	mkdir -p docs/screenshots
	cp test-results/screenshots/*.png docs/screenshots/

## The whole test suite against real PostgreSQL, Redis and Kafka.
test: install browser services
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

## The unit, API and in-process pipeline tests on PostgreSQL alone: no Redis, no Kafka, no processes.
test-fast: install
	DJANGO_SETTINGS_MODULE=tests.settings_fast $(PY) -m pytest tests/engine tests/unit tests/api tests/security tests/console \
		-m "not e2e and not browser and not faults and not services"

test-faults: install services
	$(PY) -m pytest -m faults

## ruff, and the import contracts of .importlinter (which way the apps depend).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: install
	$(PY) benchmarks/engine.py

## The admin's orders list on a database of its own holding 1,000,000 orders (needs PostgreSQL).
bench-admin: install
	$(PY) benchmarks/admin_orders.py

## Each check of a reconciliation run, from genesis and from the checkpoints, timed on a database of its
## own holding 150,000 engine events in each of two markets, traded and settled through the exchange's
## own code (needs PostgreSQL).
bench-reconcile: install
	$(PY) benchmarks/reconcile.py

## The API and settlement side by side (benchmarks/e2e.py); starts the exchange with raised THROTTLE_*,
## open-order and token-lifetime limits, when /readyz does not answer on PORT, and with the topics
## keeping 5 minutes of messages (the development broker's CPU grows with all it holds). Writes
## docs/bench-e2e.json and docs/bench-e2e.png.
BENCH_ENV := THROTTLE_USER=1000000/minute THROTTLE_ORDERS=1000000/minute THROTTLE_AUTH=10000/minute \
	THROTTLE_ANON=100000/minute MAX_OPEN_ORDERS_PER_USER=1000000 JWT_ACCESS_SECONDS=3600 KAFKA_RETENTION_MS=300000
bench-e2e: install
	@curl -fsS -o /dev/null "http://127.0.0.1:$${PORT:-8000}/readyz" 2>/dev/null || $(BENCH_ENV) $(MAKE) up
	$(PY) benchmarks/e2e.py --base "http://127.0.0.1:$${PORT:-8000}"

## Where the API's CPU goes: a balance read, an order and a batch of 100, profiled in one process
## (benchmarks/api_profile.py; needs the development database, as after `make up`).
bench-api: install
	$(PY) benchmarks/api_profile.py

## Where each Python process of the running exchange spends its CPU while one phase of bench-e2e runs
## (benchmarks/stack_profile.py, py-spy; needs the exchange running, as after `make bench-e2e`).
## Writes docs/stack-profile.md.
bench-profile: install
	$(PY) benchmarks/stack_profile.py --base "http://127.0.0.1:$${PORT:-8000}"

## Each stage behind the API on its own, in one process: the outbox relay, the settlement consumer's store
## and settlement, with their rates and CPU per item (benchmarks/stages.py; a database and topics of its own
## on DATABASE_URL's server and the broker `make up` starts).
bench-stages: install
	$(PY) benchmarks/stages.py

## What a Kafka consumer's poll costs on the running broker and how soon it hands over a message, idle and
## with messages flowing: blocking polls against the Poller (benchmarks/kafka_poll.py; topics of its own).
bench-poll: install
	$(PY) benchmarks/kafka_poll.py

## Delete every order, balance and trade of the local exchange (refused with EXCHANGE_ENV=production).
reset: install
	$(PY) -m exchange.stack reset

clean: down
	rm -rf .run staticfiles
