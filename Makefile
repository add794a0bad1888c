# Two commands on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_HOME ?= .demo-home

# Quiet, local Prefect: an ephemeral server with its database under the repo, no telemetry. shoal sets the last
# four itself where they are missing (shoal.flows.PREFECT_DEFAULTS); here they also reach the tests' Prefect harness.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_UI_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export DO_NOT_TRACK := 1

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/shoal --home $(DEMO_HOME) demo

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m bench.run

clean:
	rm -rf $(DEMO_HOME) .prefect .pytest_cache .hypothesis
