# Developer and CI entry points. Every target works on a fresh clone with only Python 3.11+:
# it bootstraps uv (pinned below) into .tools/, and uv installs exactly the versions uv.lock
# pins into .venv (`uv sync --locked` refuses a lock that disagrees with pyproject.toml).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PACKAGES := dispatcher workers producer
PYTEST_ARGS ?=
# The suite runs in PYTEST_PROCS processes, each taking a whole test file at a time
# (pytest-xdist): most integration time is waiting on real processes, so three keep two
# cores busy. PYTEST_PROCS=0 runs everything in one process.
PYTEST_PROCS ?= 3
PYTEST := $(BIN)/python -m pytest -n $(PYTEST_PROCS) --dist loadfile
# Keep equal to the `uv==` pin in pyproject.toml's test group (a unit test compares them).
UV_VERSION := 0.13.9
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
UV_STAMP := $(TOOLS)/.uv-$(UV_VERSION)
# uv: use $(PYTHON) for .venv, never download an interpreter, install into .venv.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
SYNC := $(UV) sync --locked

.PHONY: install sync-dev lock lock-check demo fmt lint typecheck test test-unit \
	test-integration test-pythons all clean

$(UV_STAMP):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "llmdispatcher needs Python 3.11 or newer: run make with PYTHON=python3.11 (or newer)")'
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check --only-binary=:all: 'uv==$(UV_VERSION)'
	@touch $(UV_STAMP)

sync-dev: $(UV_STAMP)
	@$(SYNC)

install: sync-dev  ## create .venv with the project, its test and dev tools, as uv.lock pins them

lock: $(UV_STAMP)  ## upgrade every locked version deliberately (then run make all and commit uv.lock)
	$(UV) lock --upgrade

lock-check: $(UV_STAMP)  ## fail when pyproject.toml and uv.lock disagree
	$(UV) lock --check

demo: $(UV_STAMP)  ## the whole loop on an embedded Redis with the mock vendor, no API key
	@# Only what the demo needs; --inexact leaves test tools a developer already has.
	@$(SYNC) --no-dev --inexact
	@# Ctrl-C is how the demo (and --keep) ends: the demo exits 0 then, so make does too.
	@$(BIN)/llmdispatch demo $(DEMO_ARGS)

fmt: sync-dev  ## format and auto-fix
	$(BIN)/ruff format $(PACKAGES) tests
	$(BIN)/ruff check --fix $(PACKAGES) tests

lint: sync-dev  ## ruff lint and format check
	$(BIN)/ruff check $(PACKAGES) tests
	$(BIN)/ruff format --check $(PACKAGES) tests

typecheck: sync-dev  ## mypy --strict over the three packages
	$(BIN)/mypy

test: sync-dev  ## the whole suite: unit and integration tests
	$(PYTEST) $(PYTEST_ARGS)

test-unit: sync-dev  ## tests that need nothing running
	$(PYTEST) -m "not integration" $(PYTEST_ARGS)

test-integration: sync-dev  ## tests with a private redis-server and real processes
	$(PYTEST) -m integration $(PYTEST_ARGS)

test-pythons: $(UV_STAMP)  ## the unit suite under python3.12 and python3.13 too, each in its own venv
	@bash .ci/other-pythons $(UV) 3.12 3.13

all: lint typecheck test

clean:
	rm -rf $(VENV) $(TOOLS) .venv-py3.* .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
