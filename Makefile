# Set-up commands: `make demo` runs the main job locally, `make test` runs the whole test suite.
# Both create the virtual environment in .venv and install what they need on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
DEMO_DIR := .distill/demo

.PHONY: install test lint demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Azurite, the Azure Storage emulator that the tests start (tests/azurite.py), comes from package.json.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

lint: install
	$(BIN)/ruff check .

test: install lint $(NODE_STAMP)
	$(BIN)/pytest

demo: install
	$(BIN)/distill sample --task nli --rows 120 --out $(DEMO_DIR)
	$(BIN)/distill validate $(DEMO_DIR)/manifest.yaml
	$(BIN)/distill preview $(DEMO_DIR)/manifest.yaml --rows 1
	@echo "Running the job against the project's TEST teacher (it answers from the sample's known labels; it is not a model)."
	$(BIN)/distill run $(DEMO_DIR)/manifest.yaml --teacher test --restart --out $(DEMO_DIR)/out

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .distill
