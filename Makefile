# Two commands: `make run` (demo on 127.0.0.1:8080) and `make test`; `make check` for the
# edit-test loop.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
JS_STAMP := $(VENV)/js/.installed-stamp

.PHONY: install system-deps node-deps js-deps bench-deps run test check lint bench clean

$(STAMP): pyproject.toml setup.py $(wildcard src/rawexport/export/_csvline*.[ch]) src/rawexport/ingest/_lzstring.c src/rawexport/ingest/_trackerpb.c src/rawexport/ingest/_prescan.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# What the tests need from Debian: PostgreSQL's server (initdb, pg_ctl) and nginx, for
# the catalog suite on PostgreSQL and the cluster test; chromium for the console's browser
# tests (Playwright drives it; no browser download); node and npm for the lz-string tests
# (js-deps). Installed only when missing (as root; `apt-get update` once).
system-deps:
	@missing=""; \
	  { command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || missing="$$missing postgresql"; \
	  { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null 2>&1 || missing="$$missing nginx-light"; \
	  command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	  { command -v node && command -v npm; } >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  fi

# node and npm alone (what `make run` needs of the above).
node-deps:
	@{ command -v node && command -v npm; } >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }

# The npm packages of js/package.json, at the versions (and sha512) js/package-lock.json
# pins, into $(VENV)/js/node_modules: htmx.org (the console) and swagger-ui-dist (/docs),
# which rawexport serves from there (api/assets.py), and lz-string 1.5.0, the reference the
# lz-string decoder is tested against (tests/ingest/lzstring_oracle.js). No install script
# is run. Done again only when the lock file changes, so `make run` works offline after.
$(JS_STAMP): js/package.json js/package-lock.json | node-deps
	mkdir -p $(VENV)/js
	cp js/package.json js/package-lock.json $(VENV)/js/
	npm ci --prefix $(VENV)/js --ignore-scripts --no-audit --no-fund
	touch $@

js-deps: $(JS_STAMP)

run: install js-deps
	$(BIN)/rawexport demo --home ./demo-data

lint: install
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Tests run in a random order (pytest-randomly); the seed is printed first, and
# `make test SEED=N` runs that order again.
SEED_CMD = seed=$${SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; echo "random order seed: $$seed (make $@ SEED=$$seed repeats it)"
test: lint system-deps js-deps
	@$(SEED_CMD); $(BIN)/pytest -q -p randomly --randomly-seed=$$seed

# The edit-test loop: lint, types, import layers and the tests that start no server (no
# rawexport process, uvicorn, moto, PostgreSQL, Dask or browser) and are no long
# robustness sweep (fuzzing, bombs): tests/conftest.py marks those `server` and `slow`.
check: lint js-deps
	@$(SEED_CMD); $(BIN)/pytest -q -p randomly --randomly-seed=$$seed -m "not server and not slow"

# wrk drives the HTTP benches (bench/api.py, bench/collect.py); without it they fall back to
# a slower Python client.
bench-deps: install
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	@$(BIN)/python -c "import polars" 2>/dev/null || $(BIN)/python -m pip install -q -e '.[dev,bench]'

bench: install bench-deps
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) demo-data bench-data .mypy_cache .ruff_cache .pytest_cache
