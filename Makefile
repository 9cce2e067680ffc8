# ecs-cluster-manager: test, lint, demo, run and container targets.
# The rules live in makelib/*.mk; each file adds its part to the shared
# double-colon targets all::, clean::, distclean:: and info::.
# `make help` lists the targets; ToolUse.md documents them and their variables.

.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
.SUFFIXES:
MAKEFLAGS += --no-builtin-rules

.PHONY: help all clean distclean info

all:: ## Lint and run the tests
clean:: ## Remove caches (keeps the venv and images)
distclean:: clean ## clean, then remove the venv too
info:: ## Print tool versions, paths and variables
	@echo "project:     ecs-cluster-manager"

include makelib/python.mk
include makelib/docker.mk
include makelib/ecr.mk

help: ## List the targets with a one-line description
	@echo "Usage: make <target> [VARIABLE=value ...]   (variables: see ToolUse.md)"
	@echo
	@awk -F ':+[^#]*## ' '/^[A-Za-z0-9_.-]+::?[^=]*## / && !seen[$$1]++ { printf "  %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
