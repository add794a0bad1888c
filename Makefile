# Two commands on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LOCK := constraints.txt
DEMO_HOME ?= .demo-home

# Quiet, local Prefect: an ephemeral server with its database under the repo, no telemetry. shoal sets the last
# four itself where they are missing (shoal.flows.PREFECT_DEFAULTS); here they also reach the tests' Prefect harness.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_UI_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export DO_NOT_TRACK := 1

.PHONY: setup demo test bench lock clean

# Installs take the exact versions of the lock; pyproject.toml says the ranges shoal supports.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/shoal --home $(DEMO_HOME) demo

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[test,bench]'
	$(PY) -m bench.run

# A fresh environment from pyproject.toml's ranges (test and bench extras), then its exact versions into the lock
# (local labels such as torch's +cpu dropped: the version is what pip matches). Commit it once `make test` passes.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[test,bench]'
	{ echo "# The lock: every package of the test and bench set-up at one exact version. Refresh with make lock."; \
	  .lock-venv/bin/pip list --format=freeze --exclude-editable | sed 's/+[A-Za-z0-9.]*$$//'; } > $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(DEMO_HOME) .prefect .pytest_cache .hypothesis
