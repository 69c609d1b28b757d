# Two commands a user needs: `make demo` and `make test`.
# Each bootstraps what it needs: uv (if missing) and the locked environment.
SHELL := /bin/bash
PYTHON ?= python3
UV_DIR := $(CURDIR)/.tools
UV := $(shell command -v uv 2>/dev/null || echo $(UV_DIR)/bin/uv)
VENV := $(CURDIR)/.venv
export UV_COMPILE_BYTECODE := 1
# Use the system trust store (machines behind a TLS-inspecting proxy add their CA there).
export UV_SYSTEM_CERTS ?= 1
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo test lint bench bench-quick install clean

$(UV_DIR)/bin/uv:
	$(PYTHON) -m venv $(UV_DIR)
	$(UV_DIR)/bin/python -m pip install --quiet --disable-pip-version-check uv

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --all-groups
	touch $@

install: $(VENV)/.synced

demo: install
	$(VENV)/bin/python -m examples.demo

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest
	# The docstring Examples that can run, as doctests (their own session: the suite's fixtures are not theirs).
	$(VENV)/bin/python -m pytest --doctest-modules blocks tasks flows deployments

lint: install
	$(VENV)/bin/ruff check .

# Every benchmark, figures beside their same-run baselines, into benchmarks/RESULTS.md (not part of `make test`).
bench: install
	$(VENV)/bin/python benchmarks/run_all.py

bench-quick: install
	$(VENV)/bin/python benchmarks/run_all.py --quick

clean:
	rm -rf .mlops

# The production profile on this machine (README "Moving to a shared server"): PostgreSQL (Debian's
# package, installed with apt-get if initdb is missing), the Prefect and MLflow servers on it, a process
# work pool (concurrency limit 2) with every deployment and two workers (--limit 1 each); left running.
.PHONY: profile-postgres profile-postgres-stop
profile-postgres: install
	$(VENV)/bin/python -m deployments.production_profile up

# Stop, by PID, what `make profile-postgres` left running (workers, servers, then PostgreSQL).
profile-postgres-stop: install
	$(VENV)/bin/python -m deployments.production_profile down
