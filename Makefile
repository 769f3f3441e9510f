# surreal-farm: `make setup`, `make test`, `make demo`.
PYTHON ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup test lint demo clean

setup: $(VENV)/.installed

# torch is pinned to the CPU build that the machine keeps on disk; bpy needs Python 3.11 and numpy < 2.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[render,dev]'
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q -ra

demo: setup
	$(BIN)/farm demo

clean:
	rm -rf $(VENV) farm.db farm-broker.db farm-output farm-demo .pytest_cache
