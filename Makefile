# Every target creates .venv and installs the project on first use (and when pyproject changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# More options for `make chat`, e.g. ARGS="--thread X" to resume a conversation.
ARGS ?=

.PHONY: chat test lint format typecheck check bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

chat: $(STAMP)  ## talk to the bot in the terminal (offline model unless OPENAI_* is set); ARGS="--thread X"
	$(PY) -m bot console --from-make $(ARGS)

test: $(STAMP)  ## run the test suite
	$(PY) -m pytest -q

lint: $(STAMP)  ## format check and lint
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(STAMP)  ## rewrite files in the project's format
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)  ## mypy --strict on bot/
	$(VENV)/bin/mypy

check: lint typecheck test  ## everything CI checks

bench: $(STAMP)  ## print the turn benchmarks as JSON lines
	$(PY) benchmarks/turns.py
	$(PY) benchmarks/load.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
