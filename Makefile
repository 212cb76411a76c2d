# Set-up commands: `make demo` runs the main job locally, `make test` runs the whole test suite.
# Both create the virtual environment in .venv and install what they need on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := .distill/demo

.PHONY: install test lint demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/pytest

demo: install
	$(BIN)/distill sample --task nli --rows 120 --out $(DEMO_DIR)
	$(BIN)/distill validate $(DEMO_DIR)/manifest.yaml
	$(BIN)/distill preview $(DEMO_DIR)/manifest.yaml --rows 2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .distill
