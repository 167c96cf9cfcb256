# Developer and CI entry points. `make test` works on a fresh clone with only
# Python 3.11+: it creates .venv and installs the project with its dev extras.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PACKAGES := dispatcher workers producer
PYTEST_ARGS ?=

.PHONY: install demo fmt lint typecheck test test-unit test-integration all clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "llmdispatcher needs Python 3.11 or newer: run make with PYTHON=python3.11 (or newer)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with test and dev tools

demo: $(STAMP)  ## the whole loop on an embedded Redis with the mock vendor, no API key
	$(BIN)/llmdispatch demo $(DEMO_ARGS)

fmt: $(STAMP)  ## format and auto-fix
	$(BIN)/ruff format $(PACKAGES) tests
	$(BIN)/ruff check --fix $(PACKAGES) tests

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check $(PACKAGES) tests
	$(BIN)/ruff format --check $(PACKAGES) tests

typecheck: $(STAMP)  ## mypy --strict over the three packages
	$(BIN)/mypy

test: $(STAMP)  ## the whole suite: unit and integration tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)  ## tests that need nothing running
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

test-integration: $(STAMP)  ## tests with a private redis-server and real processes
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

all: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
