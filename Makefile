# The two commands a fresh machine needs: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8360

.PHONY: serve test lint clean

# torch is pinned exactly and installed first so that pip takes the local CPU wheel
# instead of resolving a CUDA build with gigabytes of dependencies.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.test-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

serve: $(BIN)/.installed
	$(BIN)/neoxserve serve --host $(HOST) --port $(PORT)

test: $(BIN)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Style and types (configured in pyproject.toml); CI runs it before the tests.
lint: $(BIN)/.test-installed
	$(BIN)/ruff check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build src/*.egg-info
