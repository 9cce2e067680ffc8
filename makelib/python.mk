# Python targets: the virtual environment, tests, lint, the demo, the daemon
# itself and the benchmark. Every target that runs Python depends on the venv
# stamp, so a fresh clone needs only python3 and make.

PYTHON      ?= python3
VENV        ?= .venv
PYTEST_ARGS ?=
# pytest-xdist workers for `test` and `test-fast`: one more than the cores, since the
# end-to-end tests spend much of their time waiting for the daemon they run.
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))
ARGS        ?=
BENCH_ARGS  ?=
RUFF_PATHS  ?= $(wildcard run.py ecs_cluster_manager localecs tests bench)

VENV_PYTHON := $(VENV)/bin/python
PIP_INSTALL := $(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check
# Two stamps: the demo needs the runtime set and moto; tests and lint need the
# rest too. Each is rebuilt when missing or older than its requirements files.
DEMO_STAMP  := $(VENV)/.installed-demo
VENV_STAMP  := $(VENV)/.installed-dev
# The tests run in two invocations (tests/conftest.py): every test but those marked
# after_all, in parallel, each worker taking the next test as it frees up (slow ones
# first); then the after_all tests in one process, from the record of the AWS
# operations the first invocation's workers saw, which it writes to this file.
OPERATIONS_RECORD := .pytest_cache/daemon-operations.json
PYTEST_PARALLEL   := -n $(PYTEST_WORKERS) --dist load --maxschedchunk 1
define run_tests
	@rm -f $(OPERATIONS_RECORD)
	$(VENV_PYTHON) -m pytest $(PYTEST_PARALLEL) --defer-after-all=$(OPERATIONS_RECORD) $(1) $(PYTEST_ARGS)
	$(VENV_PYTHON) -m pytest --after-all-from=$(OPERATIONS_RECORD) $(1) $(PYTEST_ARGS)
endef

.PHONY: venv test test-fast lint demo sandbox run check bench

$(VENV_PYTHON):
	@echo "make: creating the virtual environment $(VENV) with $(PYTHON)" >&2
	@$(PYTHON) -m venv $(VENV)

$(DEMO_STAMP): requirements.txt requirements-demo.txt pyproject.toml | $(VENV_PYTHON)
	@echo "make: installing the runtime requirements and moto into $(VENV) (about a minute the first time)" >&2
	@$(PIP_INSTALL) -r requirements-demo.txt >&2
	@echo "make: installing ecs-cluster-manager itself (editable: the ecs-cluster-manager command)" >&2
	@$(PIP_INSTALL) --no-deps --editable . >&2
	@touch $@

$(VENV_STAMP): $(DEMO_STAMP) requirements-dev.txt
	@echo "make: installing the test and lint tools into $(VENV) (pytest, ruff, mypy, import-linter, cfn-lint, hadolint)" >&2
	@$(PIP_INSTALL) -r requirements-dev.txt >&2
	@touch $@

venv: $(VENV_STAMP) ## Create or update the venv with everything (requirements-dev.txt)

test: $(VENV_STAMP) ## Run the test suite in parallel, then the after_all tests (PYTEST_ARGS=...)
	$(call run_tests,)

test-fast: $(VENV_STAMP) ## Run the tests not marked slow, the same way
	$(call run_tests,-m "not slow")

lint: $(VENV_STAMP) ## ruff, mypy and the import layers (lint-imports) on the Python code, hadolint on the Dockerfile
	$(VENV)/bin/ruff check $(RUFF_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile

demo: $(DEMO_STAMP) ## Run the daemon against the local ECS API through a scripted scenario
	$(VENV_PYTHON) -m localecs.demo $(ARGS)

sandbox: $(DEMO_STAMP) ## Keep a local ECS API running for the daemon by hand (ARGS=--hosts 3 ...)
	$(VENV_PYTHON) -m localecs serve $(ARGS)

run: $(DEMO_STAMP) ## Run the daemon with your environment (ARGS=...)
	$(VENV_PYTHON) run.py $(ARGS)

check: $(DEMO_STAMP) ## Run the check subcommand of run.py (ARGS=...)
	@$(VENV_PYTHON) run.py check $(ARGS)

bench: $(VENV_STAMP) ## Run the benchmark, about 17 minutes (BENCH_ARGS=--quick for a smaller matrix)
	$(VENV_PYTHON) -m bench $(BENCH_ARGS)

all:: lint test

clean::
	rm -rf .pytest_cache .ruff_cache .mypy_cache build *.egg-info
	find . \( -path ./.git -o -path ./$(VENV) \) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean::
	rm -rf $(VENV)

info::
	@echo "python:      $(PYTHON) ($$($(PYTHON) --version 2>&1))"
	@echo "venv:        $(VENV) ($$(test -x $(VENV_PYTHON) && $(VENV_PYTHON) --version 2>&1 || echo not built))"
	@echo "PYTEST_ARGS: $(PYTEST_ARGS)"
	@echo "PYTEST_WORKERS: $(PYTEST_WORKERS)"
	@echo "ARGS:        $(ARGS)"
	@echo "BENCH_ARGS:  $(BENCH_ARGS)"
