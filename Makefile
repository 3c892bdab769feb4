# Switchboard developer entry points. `make help` lists them.
#
# Dependencies come only from requirements.lock / requirements-dev.lock (exact pins made by
# `make lock` from pyproject.toml); the project itself is installed with --no-deps on top.
# Stamp files in .venv make a repeated `make install` / `make test` skip the installs until
# a lock file or pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

# Installer versions, pinned so the lock files and the venvs are made the same way everywhere.
PIP_VERSION := 26.3
PIP_TOOLS_VERSION := 7.6.2
PIP_COMPILE := --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
	$(if $(UPGRADE),--upgrade)

# litellm otherwise downloads its price map on import (slow offline, and a privacy leak).
export LITELLM_LOCAL_MODEL_COST_MAP ?= True

ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install install-dev system-deps run test lock bench lint clean

help:
	@echo "make run          create .venv if needed, install pinned deps, run 'switchboard up' (ARGS=...)"
	@echo "make test         install deps + dev deps + Debian packages, run pytest (PYTEST_ARGS=...)"
	@echo "make install      install pinned runtime deps and the project into .venv (idempotent)"
	@echo "make install-dev  same plus the dev lock (pytest, ruff, mypy, ...)"
	@echo "make system-deps  install the Debian packages the tests need (scripts/install-system-deps.sh)"
	@echo "make lock         regenerate requirements*.lock from pyproject.toml (UPGRADE=1 to bump all)"
	@echo "make bench        run every bench/NAME.py as 'python -m bench.NAME'"
	@echo "make lint         ruff + mypy"
	@echo "make clean        remove .venv, caches and build output (keeps .switchboard/ data)"

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Switchboard needs Python >= 3.11; '$(PYTHON)' is older (set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet pip==$(PIP_VERSION)

$(STAMP): requirements.lock pyproject.toml | $(PY)
	$(PIP) install --quiet -r requirements.lock
	$(PIP) install --quiet --no-deps -e .
	$(PIP) check
	@touch $@

$(DEV_STAMP): requirements-dev.lock $(STAMP)
	$(PIP) install --quiet -r requirements-dev.lock
	$(PIP) check
	@touch $@

install: $(STAMP)

install-dev: $(DEV_STAMP)

$(BENCH_STAMP): requirements-bench.lock $(DEV_STAMP)
	$(PIP) install --quiet -r requirements-bench.lock
	$(PIP) check
	@touch $@

system-deps:
	@bash scripts/install-system-deps.sh

run: $(STAMP)
	$(VENV)/bin/switchboard up $(ARGS)

test: $(DEV_STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# pip-compile runs in a throwaway venv, so the lock never depends on what .venv holds.
# The dev lock is constrained by the runtime lock: shared packages get the same pins.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install -qq pip==$(PIP_VERSION) pip-tools==$(PIP_TOOLS_VERSION); \
	export CUSTOM_COMPILE_COMMAND="make lock"; \
	"$$tmp/venv/bin/pip-compile" $(PIP_COMPILE) -o requirements.lock pyproject.toml; \
	"$$tmp/venv/bin/pip-compile" $(PIP_COMPILE) --extra dev -c requirements.lock \
		-o requirements-dev.lock pyproject.toml; \
	"$$tmp/venv/bin/pip-compile" $(PIP_COMPILE) --extra dev --extra bench \
		-c requirements-dev.lock -o requirements-bench.lock pyproject.toml
	@echo "wrote requirements.lock, requirements-dev.lock and requirements-bench.lock"

# Every bench module runs even if one fails; the target fails at the end if any did.
# Modules named _* are helpers, not benchmarks.
bench: $(BENCH_STAMP)
	@ran=0; failed=; for f in bench/*.py; do \
		name=$$(basename "$$f" .py); \
		case "$$name" in _*|'*') continue ;; esac; \
		echo "== bench.$$name"; ran=$$((ran + 1)); \
		$(PY) -m "bench.$$name" || failed="$$failed $$name"; \
	done; \
	echo "ran $$ran benchmark(s)"; \
	if [ -n "$$failed" ]; then echo "benchmarks failed:$$failed" >&2; exit 1; fi

# mypy reads its package list (and --strict) from pyproject.toml.
lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
