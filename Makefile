# Everything runs from .venv, which this Makefile creates: nothing outside the
# clone is assumed except a Python 3.11+ interpreter and access to PyPI; `make test`
# also installs Debian's rabbitmq-server when it is missing (see rabbitmq-server below).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.etlctl-installed

# The broker tests run a private RabbitMQ node from Debian's rabbitmq-server package
# (which brings Erlang, epmd and openssl); see tests/broker_node.py.
RABBITMQ_SERVER := /usr/lib/rabbitmq/bin/rabbitmq-server
POLICY_RC_D     := /usr/sbin/policy-rc.d

.PHONY: demo test bench soak install clean rabbitmq-server

demo: $(STAMP)
	$(BIN)/etlctl demo

test: $(STAMP) rabbitmq-server
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The chaos soak (tests/soak.py), not part of `make test`: 17 loops of etlctl against one embedded PostgreSQL
# with random kills and three restarts, then the invariants from the audit log. Bounded by SOAK_SECONDS
# (default 240); SOAK_SEED=N replays a printed seed's decisions.
soak: $(STAMP)
	SOAK_SECONDS=$${SOAK_SECONDS:-240} $(BIN)/python -m tests.soak

install: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "etlctl needs Python 3.11 or newer; set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependencies change; the editable install picks up code changes by itself.
$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,embedded]'
	@touch $(STAMP)

# Installs rabbitmq-server when it is missing: as root on Debian, non-interactively, with a
# temporary policy-rc.d (when there is none) so that the package starts no system-wide node.
# Nothing to do when ETLCTL_TEST_AMQP_URL points the tests at a broker of your own.
rabbitmq-server:
	@if [ -n "$$ETLCTL_TEST_AMQP_URL" ] || [ -x $(RABBITMQ_SERVER) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make test: the broker tests need Debian's rabbitmq-server package ($(RABBITMQ_SERVER)), and this is" \
	       "not a Debian system: run them on one, or set ETLCTL_TEST_AMQP_URL=amqp://user:password@host:5672/vhost" >&2; \
	  exit 1; \
	fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "make test: the broker tests need Debian's rabbitmq-server package; as root, run:" >&2; \
	  echo "  apt-get update && apt-get install -y rabbitmq-server" >&2; \
	  echo "(or set ETLCTL_TEST_AMQP_URL=amqp://user:password@host:5672/vhost to use a broker you have)" >&2; \
	  exit 1; \
	fi; \
	set -e; \
	if [ ! -e $(POLICY_RC_D) ]; then \
	  trap 'rm -f $(POLICY_RC_D)' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; \
	  printf '#!/bin/sh\n# etlctl make test: start no service while rabbitmq-server installs\nexit 101\n' > $(POLICY_RC_D); \
	  chmod 755 $(POLICY_RC_D); \
	fi; \
	echo "make test: installing rabbitmq-server (apt-get) for the broker tests"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update; \
	apt-get install -y rabbitmq-server

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
