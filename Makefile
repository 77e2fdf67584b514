# The two commands of the README: `make run` (the whole mesh, embedded defaults) and `make test`.
# Both start from a fresh clone: they create .venv, install, generate the contracts and certificates.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
GENERATED := gen/python/.generated
PROTOS := $(shell find protos -name '*.proto')
BUF := node_modules/.bin/buf

.PHONY: run test lint typecheck protos buf-lint certs bench clean

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11+ is required (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

$(GENERATED): $(INSTALLED) $(PROTOS) tools/gen_protos.py
	$(BIN)/python tools/gen_protos.py
	@touch $@

protos: $(GENERATED)

# buf (proto lint and breaking-change check) ships inside the npm package @bufbuild/buf.
$(BUF): package.json
	@if command -v npm >/dev/null; then npm ci --silent --no-audit --no-fund && touch $@; \
	else echo "npm not found: proto lint will be skipped (CI requires it)"; fi

buf-lint: $(BUF)
	$(BUF) lint

run: $(GENERATED)
	$(BIN)/metaagent dev

lint: $(GENERATED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(GENERATED)
	$(BIN)/mypy

test: $(GENERATED) $(BUF) lint typecheck
	$(BIN)/pytest

certs: $(GENERATED)
	$(BIN)/metaagent certs

bench: $(GENERATED)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) gen .run node_modules .pytest_cache .mypy_cache .ruff_cache
