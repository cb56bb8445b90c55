# The two-command promise: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: setup
	PREFECT_HOME=$(CURDIR)/.prefect $(BIN)/backlash demo --dir demo
	@echo ""
	@echo "Open an alert email:  ls demo/outbox/*.eml"
	@echo "What the SMTP server received:  ls demo/smtp-received/*.eml"
	@echo "Query the warehouse:  $(BIN)/backlash sql \"SELECT * FROM marts.anomalies\""

test: setup
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf demo .prefect .pytest_cache .ruff_cache
