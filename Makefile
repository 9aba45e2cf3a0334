# The two commands: `make run` and `make test`. Everything else is what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: run test bench drill format

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: $(STAMP)
	$(VENV)/bin/python -m trialsite.devstack run

test: $(STAMP)
	$(VENV)/bin/python -m trialsite.devstack test $(PYTEST_ARGS)

format: $(STAMP)
	$(VENV)/bin/python -m ruff format .
	$(VENV)/bin/python -m ruff check --fix .

# Figures, not tests: each script prints one line per figure (median of several runs).
bench: $(STAMP)
	$(VENV)/bin/python bench/reminder_scan_bench.py
	$(VENV)/bin/python bench/export_bench.py
	$(VENV)/bin/python bench/http_bench.py
	$(VENV)/bin/python bench/pages_bench.py

# Fault drill: randomization load through gunicorn while PostgreSQL restarts, a gunicorn worker is
# SIGKILLed and Redis stops for ten seconds; prints each check, exits 1 if one fails.
drill: $(STAMP)
	$(VENV)/bin/python bench/fault_drill.py
