# Python targets: the virtual environment, tests, lint, the demo, the daemon
# itself and the benchmark. Every target that runs Python depends on the venv
# stamp, so a fresh clone needs only python3 and make.

PYTHON      ?= python3
VENV        ?= .venv
PYTEST_ARGS ?=
ARGS        ?=
BENCH_ARGS  ?=
RUFF_PATHS  ?= $(wildcard run.py ecs_cluster_manager tests bench)

VENV_PYTHON := $(VENV)/bin/python
# Rebuilt when missing or older than any requirements file.
VENV_STAMP  := $(VENV)/.installed

.PHONY: venv test test-fast lint demo run check bench

$(VENV_STAMP): $(wildcard requirements*.txt)
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV_STAMP) ## Create or update the venv from requirements-dev.txt

test: $(VENV_STAMP) ## Run the test suite (PYTEST_ARGS=...)
	$(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV_STAMP) ## Run the tests not marked slow
	$(VENV_PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(VENV_STAMP) ## ruff and mypy on the Python code, hadolint on the Dockerfile
	$(VENV)/bin/ruff check $(RUFF_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

demo: $(VENV_STAMP) ## Run the daemon against the local ECS sandbox
	$(VENV_PYTHON) -m ecs_cluster_manager.sandbox $(ARGS)

run: $(VENV_STAMP) ## Run the daemon with your environment (ARGS=...)
	$(VENV_PYTHON) run.py $(ARGS)

check: $(VENV_STAMP) ## Run the check subcommand of run.py (ARGS=...)
	$(VENV_PYTHON) run.py check $(ARGS)

bench: $(VENV_STAMP) ## Run the benchmark (BENCH_ARGS=...)
	$(VENV_PYTHON) -m bench $(BENCH_ARGS)

all:: lint test

clean::
	rm -rf .pytest_cache .ruff_cache .mypy_cache
	find . \( -path ./.git -o -path ./$(VENV) \) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean::
	rm -rf $(VENV)

info::
	@echo "python:      $(PYTHON) ($$($(PYTHON) --version 2>&1))"
	@echo "venv:        $(VENV) ($$(test -x $(VENV_PYTHON) && $(VENV_PYTHON) --version 2>&1 || echo not built))"
	@echo "PYTEST_ARGS: $(PYTEST_ARGS)"
	@echo "ARGS:        $(ARGS)"
	@echo "BENCH_ARGS:  $(BENCH_ARGS)"
