# lkswarm — `make run` and `make test` are the two commands; everything else supports them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Cargo's build output is cached under $HOME so clean clones (CI) reuse compiled dependencies.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/lkswarm/target
export PYO3_PYTHON := $(abspath $(BIN)/python)
SERVER_VERSION := v1.13.5
LK_VERSION := v2.18.2
RUST_SOURCES := Cargo.toml Cargo.lock rustfmt.toml $(wildcard .cargo/config.toml) \
  $(shell find rust protos -type f \( -name '*.rs' -o -name '*.proto' \) 2>/dev/null)
# The patched str0m Cargo.toml's [patch.crates-io] points at (rust/patches/str0m-0.25.0.diff).
STR0M := .build/str0m-0.25.0/.lkswarm-patch
PY_DIRS := python tests bench protos

.PHONY: help build run test lint format bench fuzz clean
# One step at a time, even under make -j: the Go server build and the fat-LTO cargo build share 2 cores.
.NOTPARALLEL:

help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

build: $(VENV)/.ext.stamp $(BIN)/livekit-server ## Create .venv, build the extension (release), install deps (the ray extra too, for the tests) and livekit-server

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) is required (set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.deps.stamp: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	  print('\n'.join(p['dependencies'] + p['optional-dependencies']['dev'] + p['optional-dependencies']['ray']))" \
	  > $(VENV)/requirements.txt
	$(BIN)/pip install -q -r $(VENV)/requirements.txt
	touch $@

$(STR0M): rust/patches/str0m-0.25.0.diff rust/patches/prepare-str0m
	rust/patches/prepare-str0m

$(VENV)/.ext.stamp: $(RUST_SOURCES) $(STR0M) $(VENV)/.deps.stamp
	@command -v cargo >/dev/null || { echo "error: the Rust toolchain (cargo) is required; install it with rustup" >&2; exit 1; }
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release --quiet
	touch $@

# The binary is rebuilt (or copied from the per-version cache) when SERVER_VERSION changes: the version file
# is rewritten only when its content differs, and install-go-tool checks the copy's own version marker.
$(BIN)/livekit-server: $(VENV)/.server-version | $(BIN)/python
	.ci/install-go-tool livekit-server github.com/livekit/livekit-server/cmd/server@$(SERVER_VERSION) server $@

$(VENV)/.server-version: FORCE | $(BIN)/python
	@echo $(SERVER_VERSION) | cmp -s - $@ || echo $(SERVER_VERSION) > $@

FORCE:

# lk is only the benchmarks' anchor, so only `make bench` builds it: bench/tools/install-lk
# builds it once (with real media in place of the Git LFS pointers its module zip embeds)
# and never fails; without it `make bench` says the lk suites were skipped. `make run`
# and `make test` never need it.
lk: | $(BIN)/python
	@bench/tools/install-lk $(BIN)/lk $(LK_VERSION) $(BIN)/python

run: build ## Build, then run the default scenario (one audio and one video publisher) against an embedded livekit-server
	$(BIN)/lkswarm run --audio-publishers 1 --video-publishers 1

lint: build ## ruff, mypy, stubtest, the import-layer contract, clippy (-D warnings) and rustfmt
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest lkswarm._core --allowlist .stubtest-allowlist
	$(BIN)/lint-imports
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	cargo fmt --check

format: ## Apply ruff and rustfmt formatting
	$(BIN)/ruff format $(PY_DIRS)
	$(BIN)/ruff check --fix $(PY_DIRS)
	cargo fmt

# The unit tests run in a network namespace of their own where one can be made (root, or user namespaces):
# there nothing can connect anywhere, which proves them socket-free; tests/conftest.py guards it too.
UNIT_NETNS := $(shell unshare -n true 2>/dev/null && echo unshare -n)

test: build lint ## Build, lint, cargo test, then pytest: unit tests (no sockets), then integration against the real server
	cargo test
	$(UNIT_NETNS) $(BIN)/pytest -m "not integration"
	$(BIN)/pytest -m integration

bench: build lk ## Build lk (the benchmarks' anchor), run the benchmarks and record them in bench/results/
	$(BIN)/python bench/run_all.py

clean: ## Remove the venv and build outputs (the $$HOME caches stay)
	rm -rf $(VENV) python/lkswarm/*.so .pytest_cache .mypy_cache .ruff_cache .build
