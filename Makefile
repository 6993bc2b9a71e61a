# Plexus developer commands. Everything runs from the project's own .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install iproute2 postgresql mosquitto mosquitto-clients demo demo-integration test test-fast bench bench-security bench-connectors bench-edge soak lint proto clean

install: $(STAMP)

# Every extra plus the dev tools, at the exact versions of constraints.txt
# (pyproject.toml gives library users ranges; the project's own runs are pinned).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m plexus.demo

# Issue 12's example: a throwaway PostgreSQL, the local cluster and connector processes
# (PostgreSQL in us to a replica table in eu, a webhook in ap, then a file in a new region).
demo-integration: install postgresql
	$(BIN)/python -m plexus.demo_integration

# tests/test_partition.py cuts regions off in network namespaces with `ip` (Debian's
# iproute2 package: a command-line tool, no service to start).
iproute2:
	@command -v ip >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends iproute2; }

# tests/test_mqtt_mosquitto.py runs Debian's MQTT clients (mosquitto_pub, mosquitto_sub)
# against the node's MQTT listener: command-line tools, no broker or service.
mosquitto-clients:
	@command -v mosquitto_sub >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends mosquitto-clients; }

# The PostgreSQL connector tests start throwaway servers (initdb into a temporary
# directory) from Debian's postgresql package: only its binaries are used. The
# install makes no cluster of its own (createcluster.conf) and starts no service
# (a policy-rc.d that refuses, only for the install, when the machine has none).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO mkdir -p /etc/postgresql-common && \
		echo 'create_main_cluster = false' | $$SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null && \
		POLICY=; [ -e /usr/sbin/policy-rc.d ] || { POLICY=1; \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null; \
			$$SUDO chmod 755 /usr/sbin/policy-rc.d; }; \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends \
			-o Dpkg::Options::=--force-confold postgresql; STATUS=$$?; \
		[ -z "$$POLICY" ] || $$SUDO rm -f /usr/sbin/policy-rc.d; exit $$STATUS; }

# The edge benchmark measures Debian's Mosquitto broker beside Plexus: its binary only,
# started by the benchmark on a free port (no service: a policy-rc.d refuses, as above).
mosquitto:
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		POLICY=; [ -e /usr/sbin/policy-rc.d ] || { POLICY=1; \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null; \
			$$SUDO chmod 755 /usr/sbin/policy-rc.d; }; \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends mosquitto; \
		STATUS=$$?; [ -z "$$POLICY" ] || $$SUDO rm -f /usr/sbin/policy-rc.d; exit $$STATUS; }

# The suite runs in TEST_WORKERS pytest-xdist processes (tests pick ports per worker:
# tests/harness.free_port), then the `solo` tests alone: they assert what happens
# under a CPU load they make themselves, which the other worker's tests would add to.
TEST_WORKERS ?= 2

test: install iproute2 postgresql mosquitto-clients lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m "not solo"
	$(BIN)/pytest -q -m solo

test-fast: install postgresql mosquitto-clients
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m "not slow and not solo"

bench: install postgresql mosquitto
	$(BIN)/python benchmarks/run_all.py

# What TLS and tokens cost (also part of make bench).
bench-security: install
	$(BIN)/python benchmarks/run_all.py --only security

# PostgreSQL commits in us to sinks in eu through `plexus connector run` processes
# (also part of make bench; needs Debian's postgresql, as the connectors' tests do).
bench-connectors: install
	$(BIN)/python benchmarks/run_all.py --only connectors

# MQTT and HTTP, beside Debian's Mosquitto on the same machine (also part of make bench).
bench-edge: install mosquitto
	$(BIN)/python benchmarks/run_all.py --only edge

# One node under mixed load for 10 minutes (not part of make bench).
soak: install
	$(BIN)/python benchmarks/run_all.py --only soak

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. \
		--pyi_out=. proto/plexus/v1/*.proto

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
