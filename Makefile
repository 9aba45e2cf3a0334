# The two commands: `make run` and `make test`. Everything else is what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: run test bench drill drill-scale format

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

# Figures, not tests: every bench in turn, each figure of issue 20 beside its target with PASS or
# MISS, then a summary; exits 1 if a figure MISSes. BENCH_ARGS="--quick" for a smoke run.
bench: $(STAMP)
	$(VENV)/bin/python bench/run_all.py $(BENCH_ARGS)

# Fault drill: randomization load through gunicorn while PostgreSQL restarts, a gunicorn worker is
# SIGKILLed and Redis stops for ten seconds; prints each check, exits 1 if one fails.
drill: $(STAMP)
	$(VENV)/bin/python bench/fault_drill.py

# Scale-out drill: two web servers, two Celery workers and beat, each its own process group with
# its own settings, on one PostgreSQL and one Redis; 32 clients randomize over both web servers.
drill-scale: $(STAMP)
	$(VENV)/bin/python bench/scale_out_drill.py
