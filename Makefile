# Two entry points (see README): `make quickstart` and `make test`.
# The virtual environment lives in .venv and is created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install quickstart test clean-runs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

quickstart: install
	$(BIN)/python -m vlmo_composer.quickstart

test: install
	$(BIN)/python -m pytest -q

clean-runs:
	rm -rf runs data/synthetic
